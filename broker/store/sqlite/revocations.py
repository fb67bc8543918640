"""The revocation log on SQLite: appends and prunes under the file's write lock, reads in one snapshot.

* :meth:`SqliteRevocationLog.append` is one ``BEGIN IMMEDIATE`` transaction: it takes the database's write lock
  before it reads anything (SQLite "Transaction", §2.2), so appenders in every process on the file take turns.
  Its sequence numbers come from ``revocation_meta.head`` (``head + 1 ...``, then ``head`` moves on), not from
  ``max(seq)``: pruning the newest entries must not hand their numbers out again. A release ends the quarantines
  of its pattern in the same transaction, and the ``revocations`` change counter is bumped in it too. Commits are
  durable (``synchronous=FULL``, :mod:`broker.store.sqlite._open`).
* :meth:`~SqliteRevocationLog.read` and :meth:`~SqliteRevocationLog.snapshot` read ``revocation_meta`` and the
  entries in one read transaction: in WAL mode it sees one snapshot of the file (SQLite "Write-Ahead Logging",
  §2.2), so a page never holds an entry above its ``head`` nor lacks one below it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from broker.events.revocations import LogEntry, RevocationEvent
from broker.events.topics import REVOCATIONS
from broker.store.revocation_rows import RELEASED, Row, check_position, check_read, from_body, to_row
from broker.store.sqlite._worker import SqliteWorker, immediate, to_micros
from broker.store.sqlite.changes import bump
from broker.tokens.keystore import check_instant
from broker.tokens.revocation import LogPage

__all__ = ["SqliteRevocationLog"]

_INSERT = (
    "INSERT INTO revocation_log (seq, kind, target, body, cutoff_until, kept_until, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))"
)
# The release's quarantines are cut off until their cutoff (earlier if an earlier release said so).
_END_QUARANTINES = (
    "UPDATE revocation_log SET kept_until = min(coalesce(kept_until, cutoff_until), cutoff_until) "
    "WHERE kind = 'subject.quarantined' AND target = ? RETURNING kept_until"
)
_META = "SELECT feed_id, head, horizon FROM revocation_meta"
_ENTRIES = "SELECT seq, kind, body FROM revocation_log"


class SqliteRevocationLog:
    def __init__(self, worker: SqliteWorker) -> None:
        self._worker = worker

    async def append(self, events: Sequence[RevocationEvent]) -> tuple[LogEntry, ...]:
        rows = [to_row(event) for event in events]
        if not rows:
            return ()
        first = await self._worker.run(lambda conn: _append(conn, rows))
        return tuple(LogEntry(seq, event) for seq, event in enumerate(events, first))

    async def read(self, after: int, *, limit: int = 1000) -> LogPage:
        check_read(after, limit)
        return await self._worker.run(lambda conn: _read(conn, after, limit))

    async def snapshot(self, now: datetime) -> LogPage:
        at = to_micros(check_instant(now))
        return await self._worker.run(lambda conn: _snapshot(conn, at))

    async def prune(self, now: datetime) -> int:
        at = to_micros(check_instant(now))
        return await self._worker.run(lambda conn: _prune(conn, at))


def _append(conn: sqlite3.Connection, rows: list[Row]) -> int:
    """Write ``rows`` from ``head + 1`` on; the first one's seq."""
    with immediate(conn):
        (head,) = conn.execute("UPDATE revocation_meta SET head = head + ? RETURNING head", (len(rows),)).fetchone()
        first = int(head) - len(rows) + 1
        pending: list[tuple[object, ...]] = []
        for seq, row in enumerate(rows, first):
            kept = to_micros(row.kept_until)
            if row.kind == RELEASED:
                conn.executemany(_INSERT, pending)  # the quarantines this release may end are in the table first
                pending.clear()
                ends = [int(r[0]) for r in conn.execute(_END_QUARANTINES, (row.target,)).fetchall()]
                kept = max([*ends, *([] if kept is None else [kept])], default=None)
            pending.append((seq, row.kind, row.target, row.body, to_micros(row.cutoff_until), kept))
        conn.executemany(_INSERT, pending)
        bump(conn, REVOCATIONS)
    return first


@contextmanager
def _read_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN")  # deferred: a read snapshot from the first SELECT to COMMIT
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _page(conn: sqlite3.Connection, where: str, params: tuple[object, ...], after: int | None) -> LogPage:
    with _read_transaction(conn):
        feed_id, head, horizon = conn.execute(_META).fetchone()
        if after is not None:
            check_position(after, int(head), int(horizon))
        rows = conn.execute(f"{_ENTRIES} WHERE {where}", params).fetchall()
    entries = tuple(LogEntry(int(seq), from_body(int(seq), kind, body)) for seq, kind, body in rows)
    return LogPage(str(feed_id), entries, int(head), int(horizon))


def _read(conn: sqlite3.Connection, after: int, limit: int) -> LogPage:
    return _page(conn, "seq > ? ORDER BY seq LIMIT ?", (after, limit), after)


def _snapshot(conn: sqlite3.Connection, at: int | None) -> LogPage:
    return _page(conn, "kept_until IS NULL OR kept_until > ? ORDER BY seq", (at,), None)


def _prune(conn: sqlite3.Connection, at: int | None) -> int:
    with immediate(conn):
        gone = [
            int(r[0]) for r in conn.execute("DELETE FROM revocation_log WHERE kept_until <= ? RETURNING seq", (at,))
        ]
        if gone:
            conn.execute("UPDATE revocation_meta SET horizon = max(horizon, ?)", (max(gone),))
    return len(gone)
