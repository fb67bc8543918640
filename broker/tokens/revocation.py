"""What revocation, quarantine and the revocation feed need from a store: the revocation log (issue 10).

The log's entries and their meaning are in :mod:`broker.events.revocations`; this module declares the store
interface that :mod:`broker.store` implements on SQLite, PostgreSQL and in memory (one contract suite holds all
three to it).

* :meth:`RevocationLogStore.append` writes entries in one transaction and gives them gap-free sequence numbers in
  commit order (writers are serialised, so a follower that read up to ``seq`` never finds an entry below it
  appearing later), and bumps the ``revocations`` change topic in the same transaction.
* Entries are kept while they still cut something off, then :meth:`~RevocationLogStore.prune` drops them. A
  :class:`~broker.events.revocations.TokenRevoked` or :class:`~broker.events.revocations.KeyRevoked` lives until
  its ``expires_at``; a quarantine until it is released or its ``until`` passes, and in both cases at least until
  its ``cutoff_until``; a release as long as the latest cutoff of the quarantines it ended.
* ``horizon`` is the highest ``seq`` ever pruned. A follower that last saw ``seq < horizon`` may have missed a
  pruned entry, so :meth:`~RevocationLogStore.read` refuses it (:class:`LogBehind`) and it starts again from a
  :meth:`~RevocationLogStore.snapshot`. ``feed_id`` is a random name the store takes once, at its creation: a
  follower that sees it change (a store restored from another backup, a new database) starts from a snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from broker.events.revocations import LogEntry, RevocationEvent

__all__ = ["LogAhead", "LogBehind", "LogPage", "RevocationLogStore"]


@dataclass(frozen=True, slots=True)
class LogPage:
    """``entries`` in ``seq`` order; ``head`` is the store's last ``seq`` when the page was read."""

    feed_id: str
    entries: tuple[LogEntry, ...]
    head: int
    horizon: int


class LogBehind(Exception):
    """The follower's ``seq`` is below the horizon: entries it has not seen were pruned. Take a snapshot."""


class LogAhead(Exception):
    """The follower's ``seq`` is above the head: it comes from the future (or from another store)."""


class RevocationLogStore(Protocol):
    async def append(self, events: Sequence[RevocationEvent]) -> tuple[LogEntry, ...]:
        """Append ``events`` in one transaction, in order; the entries with their sequence numbers.

        A :class:`~broker.events.revocations.SubjectReleased` also ends the quarantines of its pattern in the store
        (their entries are then kept only until their ``cutoff_until``).
        """
        ...

    async def read(self, after: int, *, limit: int = 1000) -> LogPage:
        """Entries with ``seq > after``, at most ``limit``. :class:`LogBehind` if ``after < horizon``,
        :class:`LogAhead` if ``after > head``; ValueError for a negative ``after`` or a ``limit`` below 1."""
        ...

    async def snapshot(self, now: datetime) -> LogPage:
        """Every entry that still cuts something off at ``now``, with the head it was read at (one transaction)."""
        ...

    async def prune(self, now: datetime) -> int:
        """Drop the entries that no longer cut anything off at ``now`` and raise the horizon; how many went."""
        ...
