"""The audit journal store contract: one hash chain, append-only, on memory, SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from broker.audit.journal import GENESIS_HASH, chain_hash
from broker.store import Store
from tests.unit.store.conftest import OpenReplica
from tests.unit.store.helpers import T0


async def test_empty_journal_has_no_head(store: Store) -> None:
    assert await store.audit.last() is None
    assert list(await store.audit.read()) == []


async def test_append_links_each_record_to_the_one_before(store: Store) -> None:
    first = await store.audit.append("key.rotated", T0, b'{"kid":"k1"}')
    second = await store.audit.append("token.refused", T0 + timedelta(seconds=1), b'{"reason":"x"}')
    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    assert first.hash == chain_hash(GENESIS_HASH, 1, T0, "key.rotated", b'{"kid":"k1"}')
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert second.hash == second.recomputed()
    assert await store.audit.last() == second


async def test_read_returns_a_range_in_order(store: Store) -> None:
    for i in range(7):
        await store.audit.append("e", T0 + timedelta(seconds=i), str(i).encode())
    assert [r.seq for r in await store.audit.read(3, limit=2)] == [3, 4]
    assert [r.body for r in await store.audit.read(6)] == [b"5", b"6"]
    assert list(await store.audit.read(99)) == []
    assert [r.at for r in await store.audit.read(1, 2)] == [T0, T0 + timedelta(seconds=1)]


async def test_concurrent_appends_from_replicas_form_one_chain(open_replica: OpenReplica) -> None:
    replicas = [await open_replica() for _ in range(3)]
    await asyncio.gather(*(replicas[i % 3].audit.append("e", T0, f"{i}".encode()) for i in range(30)))
    records = list(await replicas[0].audit.read(1, 100))
    assert [r.seq for r in records] == list(range(1, 31))
    prev = GENESIS_HASH
    for record in records:
        assert record.prev_hash == prev and record.hash == record.recomputed()
        prev = record.hash


@pytest.mark.parametrize("event", ["", "x" * 101, "bad\nname", "é"], ids=["empty", "long", "newline", "non-ascii"])
async def test_bad_event_names_are_refused(store: Store, event: str) -> None:
    with pytest.raises(ValueError, match="event name"):
        await store.audit.append(event, T0, b"{}")
    assert await store.audit.last() is None


async def test_bad_ranges_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="seq 1 or later"):
        await store.audit.read(0)


async def test_naive_timestamp_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.audit.append("e", T0.replace(tzinfo=None), b"{}")
    assert await store.audit.last() is None


async def test_append_many_links_a_batch_after_the_tail_in_order(store: Store) -> None:
    first = await store.audit.append("e", T0, b"0")
    batch = await store.audit.append_many([("a", T0, b"1"), ("b", T0 + timedelta(seconds=1), b"2")])
    assert [(r.seq, r.event, r.body) for r in batch] == [(2, "a", b"1"), (3, "b", b"2")]
    assert batch[0].prev_hash == first.hash and batch[1].prev_hash == batch[0].hash
    assert list(await store.audit.read()) == [first, *batch]


async def test_append_many_of_nothing_writes_nothing(store: Store) -> None:
    assert list(await store.audit.append_many([])) == []
    assert await store.audit.last() is None


async def test_a_batch_with_one_bad_entry_writes_nothing(store: Store) -> None:
    with pytest.raises(ValueError, match="event name"):
        await store.audit.append_many([("ok", T0, b"{}"), ("bad\n", T0, b"{}")])
    assert await store.audit.last() is None


async def test_concurrent_batches_from_two_handles_form_one_chain(open_replica: OpenReplica) -> None:
    """Two pools on one PostgreSQL database, two connections to one SQLite file: one chain, batches not interleaved."""
    one, two = await open_replica(), await open_replica()

    async def batches(handle: Store, name: str) -> None:
        for b in range(8):
            await handle.audit.append_many([(name, T0, f"{b}:{i}".encode()) for i in range(25)])

    await asyncio.gather(batches(one, "one"), batches(two, "two"))
    records = list(await two.audit.read(1, 1000))
    assert [r.seq for r in records] == list(range(1, 401))
    prev = GENESIS_HASH
    for record in records:
        assert record.prev_hash == prev and record.hash == record.recomputed()
        prev = record.hash
    for start in range(0, 400, 25):  # each batch is contiguous and in its own order
        block = records[start : start + 25]
        assert len({r.event for r in block}) == 1
        assert [r.body.split(b":")[1] for r in block] == [str(i).encode() for i in range(25)]
