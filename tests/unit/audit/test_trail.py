"""The audit trail: hot-path events batched into one append, admin events appended before the call returns."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from broker.audit.events import KeyRotated, TokenRefused
from broker.audit.journal import AuditRecord, Entry
from broker.audit.trail import AuditTrail
from broker.audit.verify import verify_journal
from broker.store import open_store
from broker.store.memory import MemoryAuditJournal
from tests.unit.store.helpers import T0


class CountingJournal(MemoryAuditJournal):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def append_many(self, entries: Sequence[Entry]) -> Sequence[AuditRecord]:
        self.calls += 1
        return await super().append_many(entries)


async def test_events_recorded_together_are_appended_in_one_batch_with_their_own_times() -> None:
    journal = CountingJournal()
    times = iter([T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)])
    async with AuditTrail(journal, batch_window=0.01, clock=lambda: next(times)) as trail:
        assert trail.record(TokenRefused("invalid_client"))
        assert trail.record(TokenRefused("invalid_grant", "spiffe://example.org/web"))
        assert trail.record(TokenRefused("invalid_scope"))
        await trail.flush()
    records = await journal.read()
    assert journal.calls == 1
    assert [r.event for r in records] == ["token.refused"] * 3
    assert [r.at for r in records] == [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
    assert records[1].body == (
        b'{"error":"invalid_grant","grant_type":null,"reason":null,"spiffe_id":"spiffe://example.org/web","status":null}'
    )


async def test_record_now_is_on_the_journal_when_it_returns() -> None:
    journal = MemoryAuditJournal()
    trail = AuditTrail(journal, batch_window=10.0, clock=lambda: T0)
    record = await trail.record_now(KeyRotated("k2", "k1", None, "manual"))
    assert await journal.last() == record
    assert record.event == "key.rotated"


async def test_a_full_trail_refuses_and_close_writes_what_it_accepted() -> None:
    journal = MemoryAuditJournal()
    trail = AuditTrail(journal, batch_window=10.0, batch_max=2, capacity=2, clock=lambda: T0)
    assert [trail.record(TokenRefused("invalid_client")) for _ in range(3)] == [True, True, False]
    assert not trail.has_room()
    assert await trail.close() == 0
    assert len(await journal.read()) == 2


async def test_concurrent_batches_and_admin_appends_keep_one_chain_on_sqlite(tmp_path: Path) -> None:
    store = await open_store(f"sqlite://{tmp_path}/state/broker.db")
    try:
        trail = AuditTrail(store.audit, batch_window=0.001, batch_max=16)
        trail.start()

        async def hot() -> None:
            for _ in range(200):
                assert trail.record(TokenRefused("invalid_client"))
                await asyncio.sleep(0)

        async def admin() -> None:
            for i in range(10):
                await trail.record_now(KeyRotated(f"k{i}", None, None))

        await asyncio.gather(hot(), admin())
        await trail.close()
        report = await verify_journal(store.audit)
        assert report.ok and report.records == 210
    finally:
        await store.close()
