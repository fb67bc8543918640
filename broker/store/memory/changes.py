"""The change feed's in-memory twin: counters in this process, the same semantics as the real feeds.

Every handle on one twin shares its feed, so a change made through one wakes the subscribers of all (the replica
case). Nothing is delivered late or lost here, so the only resync is the one every subscription starts with.
"""

from __future__ import annotations

from broker.events import ChangeHub, Subscription, check_topic
from broker.events.topics import CLIENTS, KEYRING, REVOCATIONS

__all__ = ["MemoryChangeFeed"]


class MemoryChangeFeed:
    def __init__(self) -> None:
        self._hub = ChangeHub("memory:")
        self._counters = {KEYRING: 0, REVOCATIONS: 0, CLIENTS: 0}  # as migration 0004 leaves the real stores
        self._hub.counters_read(self._counters)

    def subscribe(self, topic: str) -> Subscription:
        return self._hub.subscribe(topic)

    def bump(self, topic: str) -> int:
        """``topic``'s next version, seen at once by every subscriber (called where the change is made)."""
        version = self._counters.get(check_topic(topic), 0) + 1
        self._counters[topic] = version
        self._hub.seen(topic, version)
        return version

    async def publish(self, topic: str) -> int:
        return self.bump(topic)

    async def close(self) -> None:
        self._hub.close()
