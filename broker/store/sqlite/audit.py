"""The audit journal on SQLite: the tail is read and a batch linked to it under one write lock (``BEGIN IMMEDIATE``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from broker.audit.journal import AuditRecord, Entry, check_entries, link
from broker.store.sqlite._worker import SqliteWorker, from_micros, immediate, to_micros

__all__ = ["SqliteAuditJournal"]

_SELECT = "SELECT seq, at, event, body, prev_hash, hash FROM audit_records"


class SqliteAuditJournal:
    def __init__(self, worker: SqliteWorker) -> None:
        self._worker = worker

    async def append(self, event: str, at: datetime, body: bytes) -> AuditRecord:
        (record,) = await self.append_many([(event, at, body)])
        return record

    async def append_many(self, entries: Sequence[Entry]) -> Sequence[AuditRecord]:
        checked = check_entries(entries)
        if not checked:
            return []
        return await self._worker.run(lambda conn: _append(conn, checked))

    async def read(self, first: int = 1, limit: int = 1000) -> Sequence[AuditRecord]:
        if first < 1 or limit < 1:
            raise ValueError("read from seq 1 or later, at least one record")
        return await self._worker.run(
            lambda conn: [
                _record(r) for r in conn.execute(f"{_SELECT} WHERE seq >= ? ORDER BY seq LIMIT ?", (first, limit))
            ]
        )

    async def last(self) -> AuditRecord | None:
        return await self._worker.run(_last)


def _record(row: tuple[int, int, str, bytes, bytes, bytes]) -> AuditRecord:
    at = from_micros(row[1])
    assert at is not None
    return AuditRecord(row[0], at, row[2], bytes(row[3]), bytes(row[4]), bytes(row[5]))


def _last(conn: sqlite3.Connection) -> AuditRecord | None:
    row = conn.execute(f"{_SELECT} ORDER BY seq DESC LIMIT 1").fetchone()
    return None if row is None else _record(row)


def _append(conn: sqlite3.Connection, entries: list[Entry]) -> list[AuditRecord]:
    with immediate(conn):
        records = link(_last(conn), entries)
        conn.executemany(
            "INSERT INTO audit_records (seq, at, event, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)",
            [(r.seq, to_micros(r.at), r.event, r.body, r.prev_hash, r.hash) for r in records],
        )
    return records
