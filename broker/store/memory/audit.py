"""The audit journal's in-memory twin: append-only, hash-chained, ``seq`` from 1; a batch is all or nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from broker.audit.journal import AuditRecord, Entry, check_entries, link

__all__ = ["MemoryAuditJournal"]


class MemoryAuditJournal:
    def __init__(self) -> None:
        self._records: list[AuditRecord] = []

    async def append(self, event: str, at: datetime, body: bytes) -> AuditRecord:
        (record,) = await self.append_many([(event, at, body)])
        return record

    async def append_many(self, entries: Sequence[Entry]) -> Sequence[AuditRecord]:
        checked = check_entries(entries)
        records = link(self._records[-1] if self._records else None, checked)
        self._records.extend(records)
        return records

    async def read(self, first: int = 1, limit: int = 1000) -> Sequence[AuditRecord]:
        _check_range(first, limit)
        return self._records[first - 1 : first - 1 + limit]

    async def last(self) -> AuditRecord | None:
        return self._records[-1] if self._records else None


def _check_range(first: int, limit: int) -> None:
    if first < 1 or limit < 1:
        raise ValueError("read from seq 1 or later, at least one record")
