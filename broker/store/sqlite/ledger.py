"""The issuance ledger on SQLite: a batch is one ``BEGIN IMMEDIATE`` transaction; a repeated ``jti`` is skipped."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from broker.events.revocations import SubjectPattern
from broker.store.base import prefix_bounds
from broker.store.sqlite._worker import SqliteWorker, from_micros, immediate, to_micros
from broker.tokens.keystore import check_instant
from broker.tokens.ledger import DEFAULT_TOP, BlastRadius, LedgerEntry, check_limit, ranked

__all__ = ["SqliteLedger"]

_INSERT = (
    "INSERT INTO issued_tokens (jti, kid, subject, audience, scope, binding, issued_at, expires_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (jti) DO NOTHING"
)
_LIVE = "FROM issued_tokens WHERE kid = ? AND expires_at > ?"


class SqliteLedger:
    def __init__(self, worker: SqliteWorker) -> None:
        self._worker = worker

    async def record(self, entries: Sequence[LedgerEntry]) -> None:
        if not entries:
            return
        rows = [_row(e) for e in entries]
        await self._worker.run(lambda conn: _insert(conn, rows))

    async def blast_radius(self, kid: str, now: datetime, *, top: int = DEFAULT_TOP) -> BlastRadius:
        at = to_micros(check_instant(now))
        return await self._worker.run(lambda conn: _blast_radius(conn, kid, at, top))

    async def prune(self, expired_before: datetime) -> int:
        at = to_micros(check_instant(expired_before))
        return await self._worker.run(lambda conn: _prune(conn, at))

    async def live_tokens(
        self, pattern: SubjectPattern, now: datetime, *, limit: int | None = None
    ) -> list[tuple[str, datetime]]:
        at = to_micros(check_instant(now))
        check_limit(limit)
        return await self._worker.run(lambda conn: _live_tokens(conn, pattern, at, limit))


def _row(e: LedgerEntry) -> tuple[object, ...]:
    audience = json.dumps(list(e.audience), separators=(",", ":"))
    return (e.jti, e.kid, e.subject, audience, " ".join(e.scope), e.binding, to_micros(e.issued_at),
            to_micros(e.expires_at))  # fmt: skip


def _insert(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    with immediate(conn):
        conn.executemany(_INSERT, rows)


def _blast_radius(conn: sqlite3.Connection, kid: str, at: int | None, top: int) -> BlastRadius:
    total, last, distinct = conn.execute(f"SELECT count(*), max(expires_at), count(DISTINCT subject) {_LIVE}",
                                         (kid, at)).fetchone()  # fmt: skip
    subjects = conn.execute(
        f"SELECT subject, count(*) AS n {_LIVE} GROUP BY subject ORDER BY n DESC, subject LIMIT ?", (kid, at, top)
    ).fetchall()
    audiences: Counter[str] = Counter()
    for audience, n in conn.execute(f"SELECT audience, count(*) {_LIVE} GROUP BY audience", (kid, at)):
        for name in json.loads(audience):
            audiences[name] += n
    return BlastRadius(
        kid=kid,
        live_tokens=int(total),
        subjects=tuple((str(s), int(n)) for s, n in subjects),
        audiences=ranked(dict(audiences), top),
        valid_until=from_micros(last),
        distinct_subjects=int(distinct),
    )


def _prune(conn: sqlite3.Connection, at: int | None) -> int:
    with immediate(conn):
        return conn.execute("DELETE FROM issued_tokens WHERE expires_at < ?", (at,)).rowcount


_LIVE_BY_SUBJECT = {  # the subject index: equality, or the prefix's range (BINARY collation: code point order)
    False: "SELECT jti, expires_at FROM issued_tokens WHERE subject = ? AND expires_at > ? "
    "ORDER BY expires_at, jti LIMIT ?",
    True: "SELECT jti, expires_at FROM issued_tokens WHERE subject >= ? AND subject < ? AND expires_at > ? "
    "ORDER BY expires_at, jti LIMIT ?",
}


def _live_tokens(
    conn: sqlite3.Connection, pattern: SubjectPattern, at: int | None, limit: int | None
) -> list[tuple[str, datetime]]:
    subject = prefix_bounds(pattern) if pattern.is_prefix else (pattern.text,)
    live = []
    for jti, exp in conn.execute(_LIVE_BY_SUBJECT[pattern.is_prefix], (*subject, at, -1 if limit is None else limit)):
        expires_at = from_micros(exp)
        assert expires_at is not None  # NOT NULL
        live.append((str(jti), expires_at))
    return live
