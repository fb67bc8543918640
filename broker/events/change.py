"""What a change feed delivers, and the interface every store implements (issue 9, "Change events between replicas").

A *topic* names one kind of shared state (``keyring``; the next issues add revocations, quarantines and
exceptions). Each topic has a counter in the store, bumped in the same transaction that changes the topic's state,
so a counter value names a committed state and a reader that saw version ``v`` has missed nothing once it has
re-read after seeing any version above ``v``. The feed carries counter values only, never the state itself: a
follower re-reads the state it keeps, which makes a lost, repeated or coalesced event harmless.

* PostgreSQL: ``NOTIFY`` on commit (PostgreSQL 15 docs, SQL command NOTIFY) to a ``LISTEN`` connection, plus a
  slow poll of the counters; notifications sent while the listener is disconnected are lost, so every reconnect
  is followed by a :class:`Change` with ``resync=True``.
* SQLite: the counters are polled at a short interval (the file is the only channel between processes).
* Memory: in-process counters, for unit tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from broker.events.hub import Subscription

__all__ = ["Change", "ChangeFeed", "check_topic"]

_TOPIC = re.compile(r"[a-z][a-z0-9_.-]{0,62}")


def check_topic(topic: str) -> str:
    """``topic`` if it is a topic name (lowercase letters, digits, ``_.-``, at most 63 characters), else ValueError.

    The name travels in a ``NOTIFY`` payload as ``"<topic> <version>"``, so it never holds a space.
    """
    if not _TOPIC.fullmatch(topic):
        raise ValueError(f"{topic!r} is not a change topic: use lowercase letters, digits and _.- (at most 63)")
    return topic


@dataclass(frozen=True, slots=True)
class Change:
    """Topic ``topic`` is at ``version`` (or later). ``resync``: changes may have been missed, re-read everything.

    A subscription's first change always has ``resync=True`` (a follower starts from a full read), as has the
    first one after the feed reconnected or found the counters lower than before (a store restored from backup).
    """

    topic: str
    version: int
    resync: bool = False


class ChangeFeed(Protocol):
    """A store's change events. One per store handle; :meth:`close` ends every subscription (the store closes it)."""

    def subscribe(self, topic: str) -> Subscription:
        """Follow ``topic`` from now on; call from the event loop that will iterate it. Raises ValueError for a
        name that is not a topic, :class:`~broker.errors.StoreError` once the feed is closed."""
        ...

    async def publish(self, topic: str) -> int:
        """Bump ``topic`` in a transaction of its own and wake every subscriber on every replica; the new version.

        A change to a topic's state bumps it in the *same* transaction instead (the keyring's ``apply`` does).
        """
        ...

    async def close(self) -> None:
        """Stop following the store and end every subscription's iteration; safe to call twice."""
        ...
