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
