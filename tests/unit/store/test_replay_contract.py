"""The replay cache contract (broker.oauth.replay) on memory, a SQLite file and a real PostgreSQL: insert if
absent, a live entry refuses, an expired one may be taken over, pruning, refusals, and one winner among replicas."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from broker.oauth.replay import MemoryReplayCache, ReplayKind, replay_key
from broker.store import Store, latest_version
from broker.store.memory import MemoryStore
from tests.unit.store.conftest import OpenReplica
from tests.unit.store.helpers import T0

MINUTE = timedelta(minutes=1)
CONCURRENT_ADDS = 50


def key(jti: str = "jti-1", minted_by: str = "billing") -> str:
    return replay_key(ReplayKind.CLIENT_ASSERTION, minted_by, jti)


async def test_the_first_add_records_and_a_replay_while_live_is_refused(store: Store) -> None:
    assert await store.replay.add(key(), now=T0, expires_at=T0 + MINUTE)
    assert not await store.replay.add(key(), now=T0 + MINUTE / 2, expires_at=T0 + 2 * MINUTE)
    assert not await store.replay.add(key(), now=T0 + MINUTE - timedelta(microseconds=1), expires_at=T0 + 9 * MINUTE)


async def test_keys_are_independent(store: Store) -> None:
    assert await store.replay.add(key("a"), now=T0, expires_at=T0 + MINUTE)
    assert await store.replay.add(key("b"), now=T0, expires_at=T0 + MINUTE)
    assert await store.replay.add(key("a", minted_by="payroll"), now=T0, expires_at=T0 + MINUTE)


async def test_an_expired_entry_may_be_taken_over_and_then_holds_until_its_new_expiry(store: Store) -> None:
    assert await store.replay.add(key(), now=T0, expires_at=T0 + MINUTE)
    assert await store.replay.add(key(), now=T0 + MINUTE, expires_at=T0 + 3 * MINUTE)  # expired at exactly exp
    assert not await store.replay.add(key(), now=T0 + 2 * MINUTE, expires_at=T0 + 4 * MINUTE)
    assert await store.replay.add(key(), now=T0 + 3 * MINUTE, expires_at=T0 + 4 * MINUTE)


async def test_prune_drops_the_entries_expired_at_now_and_counts_them(store: Store) -> None:
    for minutes, jti in [(1, "a"), (2, "b"), (3, "c")]:
        assert await store.replay.add(key(jti), now=T0, expires_at=T0 + minutes * MINUTE)
    assert await store.replay.prune(T0) == 0
    assert await store.replay.prune(T0 + 2 * MINUTE) == 2  # expires_at <= now goes
    assert await store.replay.prune(T0 + 2 * MINUTE) == 0
    assert not await store.replay.add(key("c"), now=T0 + 2 * MINUTE, expires_at=T0 + 9 * MINUTE)  # still live
    assert await store.replay.add(key("a"), now=T0 + 2 * MINUTE, expires_at=T0 + 9 * MINUTE)


@pytest.mark.parametrize(
    ("entry", "now", "expires_at", "message"),
    [
        ("jti-1", T0, T0 + MINUTE, "64 lowercase hex"),
        (key().upper(), T0, T0 + MINUTE, "64 lowercase hex"),
        (key()[:-1], T0, T0 + MINUTE, "64 lowercase hex"),
        (key() + "0", T0, T0 + MINUTE, "64 lowercase hex"),
        (key(), T0.replace(tzinfo=None), T0 + MINUTE, "timezone-aware"),
        (key(), T0, (T0 + MINUTE).replace(tzinfo=None), "timezone-aware"),
        (key(), T0, T0, "after now"),
        (key(), T0, T0 - MINUTE, "after now"),
    ],
    ids=["raw-jti", "uppercase", "short", "long", "naive-now", "naive-expiry", "expires-at-now", "expired"],
)
async def test_what_no_cache_records_is_refused_before_anything_is_written(
    store: Store, entry: str, now: datetime, expires_at: datetime, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        await store.replay.add(entry, now=now, expires_at=expires_at)
    assert "jti-1" not in str(caught.value) and key() not in str(caught.value)  # never quotes what it was given
    assert await store.replay.add(key(), now=T0, expires_at=T0 + MINUTE)  # nothing was recorded


async def test_prune_refuses_a_naive_time(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.replay.prune(T0.replace(tzinfo=None))


async def test_an_entry_recorded_on_one_handle_is_a_replay_on_another(open_replica: OpenReplica) -> None:
    first, second = await open_replica(), await open_replica()
    assert await first.replay.add(key(), now=T0, expires_at=T0 + MINUTE)
    assert not await second.replay.add(key(), now=T0, expires_at=T0 + MINUTE)
    assert await second.replay.prune(T0 + MINUTE) == 1
    assert await first.replay.add(key(), now=T0 + MINUTE, expires_at=T0 + 2 * MINUTE)


async def test_concurrent_adds_of_one_key_across_replicas_record_it_exactly_once(open_replica: OpenReplica) -> None:
    """50 adds of one key in flight at once, half on each handle: one True, the rest replays (the SQL engines'
    upsert under a write lock or a row lock; never two winners)."""
    first, second = await open_replica(), await open_replica()
    for round_ in range(2):  # a fresh key, then the same key taken over once expired
        now = T0 + 2 * round_ * MINUTE
        adds = [
            (first if i % 2 else second).replay.add(key(), now=now, expires_at=now + MINUTE)
            for i in range(CONCURRENT_ADDS)
        ]
        results = await asyncio.wait_for(asyncio.gather(*adds), 60)
        assert results.count(True) == 1, f"round {round_}: {results.count(True)} adds won"


def test_the_memory_store_replay_cache_is_the_bounded_memory_cache() -> None:
    assert isinstance(MemoryStore(latest_version()).replay, MemoryReplayCache)
