"""The audit journal on PostgreSQL: appends serialised by ``pg_advisory_xact_lock``, so replicas share one chain.

A batch takes the lock once (PostgreSQL 15 docs, 9.27.10 "Advisory Lock Functions"), reads the tail, and inserts
its records in one pipelined ``executemany``; the lock is held until the batch commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from broker.audit.journal import AuditRecord, Entry, check_entries, link
from broker.store.postgres._pool import AUDIT_LOCK, Pool, connection

__all__ = ["PostgresAuditJournal"]

_SELECT = "SELECT seq, at, event, body, prev_hash, hash FROM audit_records"


def _record(row: Any) -> AuditRecord:
    return AuditRecord(int(row[0]), row[1], row[2], bytes(row[3]), bytes(row[4]), bytes(row[5]))


_COPY = "COPY audit_records (seq, at, event, body, prev_hash, hash) FROM STDIN"


class PostgresAuditJournal:
    def __init__(self, pool: Pool, store: str) -> None:
        self._pool = pool
        self._store = store

    async def append(self, event: str, at: datetime, body: bytes) -> AuditRecord:
        (record,) = await self.append_many([(event, at, body)])
        return record

    async def append_many(self, entries: Sequence[Entry]) -> Sequence[AuditRecord]:
        checked = check_entries(entries)
        if not checked:
            return []
        async with connection(self._pool, self._store) as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK,))
            tail = await (await conn.execute(f"{_SELECT} ORDER BY seq DESC LIMIT 1")).fetchone()
            records = link(None if tail is None else _record(tail), checked)
            async with conn.cursor() as cursor, cursor.copy(_COPY) as copy:  # COPY: the cheapest bulk insert
                for r in records:
                    await copy.write_row((r.seq, r.at, r.event, r.body, r.prev_hash, r.hash))
        return records

    async def read(self, first: int = 1, limit: int = 1000) -> Sequence[AuditRecord]:
        if first < 1 or limit < 1:
            raise ValueError("read from seq 1 or later, at least one record")
        async with connection(self._pool, self._store) as conn:
            cursor = await conn.execute(f"{_SELECT} WHERE seq >= %s ORDER BY seq LIMIT %s", (first, limit))
            return [_record(r) for r in await cursor.fetchall()]

    async def last(self) -> AuditRecord | None:
        async with connection(self._pool, self._store) as conn:
            row = await (await conn.execute(f"{_SELECT} ORDER BY seq DESC LIMIT 1")).fetchone()
        return None if row is None else _record(row)
