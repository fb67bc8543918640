"""The in-process half of every change feed: the last version seen per topic, fanned out to subscriptions.

A store's feed learns counter values (a ``NOTIFY``, a poll, its own bump) and reports them here; each
:class:`Subscription` keeps only the version it last delivered, a pending-resync flag and an
:class:`asyncio.Event`, so a slow reader costs nothing while it is away and then sees the latest version once
(coalescing), never a queue of the versions in between. There is no task per subscriber.

Nothing is delivered before the feed's first full read of the counters (:meth:`ChangeHub.counters_read`): a
subscription's first change is then a resync at the version that read found, so a follower's initial full read
cannot start before the feed is following (for PostgreSQL: before ``LISTEN`` is in effect).
All methods run on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Coroutine, Mapping
from typing import Any

from broker.errors import StoreError
from broker.events.change import Change, check_topic

__all__ = ["ChangeHub", "FollowedFeed", "Subscription"]

log = logging.getLogger(__name__)


class Subscription:
    """An async iterator of :class:`Change` for one topic; :meth:`close` ends it (``contextlib.closing`` works)."""

    __slots__ = ("__weakref__", "_closed", "_delivered", "_hub", "_resync", "_wake", "topic")

    def __init__(self, hub: ChangeHub, topic: str) -> None:
        self.topic = topic
        self._hub = hub
        self._wake = asyncio.Event()
        self._delivered = 0
        self._resync = True  # a follower starts from a full read
        self._closed = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Change:
        while not self._closed:
            change = self._take()
            if change is not None:
                return change
            self._wake.clear()
            await self._wake.wait()
        raise StopAsyncIteration

    def _take(self) -> Change | None:
        version = self._hub.version(self.topic)
        if version is None or not (self._resync or version > self._delivered):
            return None
        change = Change(self.topic, version, resync=self._resync)
        self._delivered, self._resync = version, False
        return change

    def _poke(self, *, resync: bool = False) -> None:
        self._resync = self._resync or resync
        self._wake.set()

    def close(self) -> None:
        """End the iteration (a pending ``__anext__`` raises StopAsyncIteration); safe to call twice."""
        if not self._closed:
            self._closed = True
            self._wake.set()
            self._hub.discard(self)

    @property
    def closed(self) -> bool:
        return self._closed


class ChangeHub:
    """Versions per topic and the subscriptions that follow them; ``store`` names the store in errors."""

    def __init__(self, store: str) -> None:
        self._store = store
        self._versions: dict[str, int] = {}
        self._ready = False
        self._closed = False
        self._subscribers: dict[str, weakref.WeakSet[Subscription]] = {}

    def subscribe(self, topic: str) -> Subscription:
        check_topic(topic)
        if self._closed:
            raise StoreError(f"the change feed of the store {self._store} is closed: open the store again")
        subscription = Subscription(self, topic)
        self._subscribers.setdefault(topic, weakref.WeakSet()).add(subscription)
        return subscription

    def discard(self, subscription: Subscription) -> None:
        self._subscribers.get(subscription.topic, weakref.WeakSet()).discard(subscription)

    def version(self, topic: str) -> int | None:
        """The last version seen of ``topic`` (0 if it was never bumped); None before the first full read."""
        return self._versions.get(topic, 0) if self._ready else None

    def seen(self, topic: str, version: int) -> None:
        """A notification: ``topic`` reached ``version``. Only a higher version wakes (a late one is a repeat)."""
        if version > self._versions.get(topic, 0):
            self._versions[topic] = version
            if self._ready:
                self._wake(topic)

    def counters_read(self, counters: Mapping[str, int]) -> None:
        """A full read of the counters. A lower version than seen (a restored backup) makes its topic resync."""
        first = not self._ready
        self._ready = True
        for topic, version in counters.items():
            known = self._versions.get(topic, 0)
            self._versions[topic] = version
            if version < known:
                self._wake(topic, resync=True)
            elif version > known and not first:
                self._wake(topic)
        if first:
            self._wake_all(resync=False)

    def resync(self, counters: Mapping[str, int]) -> None:
        """After a reconnect: the counters as read now, and every subscription re-reads everything."""
        self._ready = True
        self._versions.update(counters)
        self._wake_all(resync=True)

    def close(self) -> None:
        """End every subscription; later :meth:`subscribe` calls raise :class:`StoreError`."""
        self._closed = True
        for subscribers in list(self._subscribers.values()):
            for subscription in list(subscribers):
                subscription.close()
        self._subscribers.clear()

    @property
    def closed(self) -> bool:
        return self._closed

    def follow(self, work: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Run the feed's following loop ``work`` as a task; if it ever dies of an error, log it and close the hub.

        The loops retry every failure they know of; an unexpected one must not leave followers waiting for changes
        that will never come: their iteration ends instead, which a follower treats as fatal.
        """
        task = asyncio.get_running_loop().create_task(work, name=name)
        task.add_done_callback(self._followed)
        return task

    def _followed(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("the change feed of the store %s stopped", self._store, exc_info=error)
            self.close()

    def _wake(self, topic: str, *, resync: bool = False) -> None:
        for subscription in list(self._subscribers.get(topic, ())):
            subscription._poke(resync=resync)

    def _wake_all(self, *, resync: bool) -> None:
        for topic in list(self._subscribers):
            self._wake(topic, resync=resync)


class FollowedFeed:
    """What a store's change feed shares: a hub, and one follower task (the store's poll or listener) started by
    the first subscription and stopped by :meth:`close`. A subclass implements :meth:`_follow`."""

    def __init__(self, store: str, *, task_name: str) -> None:
        self._store = store
        self._hub = ChangeHub(store)
        self._task: asyncio.Task[None] | None = None
        self._task_name = task_name

    def subscribe(self, topic: str) -> Subscription:
        subscription = self._hub.subscribe(topic)
        if self._task is None:
            self._task = self._hub.follow(self._follow(), name=self._task_name)
        return subscription

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        self._hub.close()

    async def _follow(self) -> None:
        raise NotImplementedError
