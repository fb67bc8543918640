"""The revocation log's in-memory twin: the same sequence numbers, horizon and refusals as the SQL stores."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

from broker.events.revocations import (
    LogEntry,
    RevocationEvent,
    SubjectQuarantined,
    SubjectReleased,
    kept_until,
)
from broker.events.topics import REVOCATIONS
from broker.store.memory.changes import MemoryChangeFeed
from broker.store.revocation_rows import check_position, check_read, to_row
from broker.tokens.keystore import check_instant
from broker.tokens.revocation import LogPage

__all__ = ["MemoryRevocationLog"]


class MemoryRevocationLog:
    def __init__(self, changes: MemoryChangeFeed) -> None:
        self._changes = changes
        self._feed_id = secrets.token_hex(8)
        self._entries: dict[int, tuple[LogEntry, datetime | None]] = {}  # seq -> (entry, kept until)
        self._head = 0
        self._horizon = 0

    async def append(self, events: Sequence[RevocationEvent]) -> tuple[LogEntry, ...]:
        for event in events:
            to_row(event)  # refused (naive times) as the SQL stores refuse it: before anything is appended
        appended = []
        for event in events:
            self._head += 1
            entry = LogEntry(self._head, event)
            keep = kept_until(event)
            if isinstance(event, SubjectReleased):
                keep = self._end_quarantines(event, keep)
            self._entries[self._head] = (entry, keep)
            appended.append(entry)
        if appended:
            self._changes.bump(REVOCATIONS)
        return tuple(appended)

    def _end_quarantines(self, release: SubjectReleased, keep: datetime | None) -> datetime | None:
        for seq, (entry, kept) in list(self._entries.items()):
            event = entry.event
            if isinstance(event, SubjectQuarantined) and event.pattern == release.pattern:
                ends = event.cutoff_until if kept is None else min(kept, event.cutoff_until)
                self._entries[seq] = (entry, ends)
                keep = ends if keep is None else max(keep, ends)
        return keep

    async def read(self, after: int, *, limit: int = 1000) -> LogPage:
        check_read(after, limit)
        check_position(after, self._head, self._horizon)
        entries = [entry for seq, (entry, _) in sorted(self._entries.items()) if seq > after][:limit]
        return LogPage(self._feed_id, tuple(entries), self._head, self._horizon)

    async def snapshot(self, now: datetime) -> LogPage:
        check_instant(now)
        live = [entry for _, (entry, kept) in sorted(self._entries.items()) if kept is None or kept > now]
        return LogPage(self._feed_id, tuple(live), self._head, self._horizon)

    async def prune(self, now: datetime) -> int:
        check_instant(now)
        gone = [seq for seq, (_, kept) in self._entries.items() if kept is not None and kept <= now]
        for seq in gone:
            del self._entries[seq]
        self._horizon = max([self._horizon, *gone])
        return len(gone)
