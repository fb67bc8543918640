"""The token endpoint's batches on SQLite: ledger rows and audit records in one ``BEGIN IMMEDIATE`` transaction.

One trip to the worker thread and one durable commit (one WAL sync with ``synchronous=FULL``) per batch, for the
ledger and the journal together. The rows are made on the event loop before the trip, so the worker thread runs
little Python of its own: it reads the chain's tail, links the batch to it and hands both tables to
``executemany``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from broker.audit.journal import Stamped, chained_rows, check_stamped
from broker.store.base import audience_json
from broker.store.sqlite._worker import SqliteWorker, immediate
from broker.tokens.ledger import LedgerRow, check_rows

__all__ = ["record_issuance"]

_LEDGER = (
    "INSERT INTO issued_tokens (jti, kid, subject, audience, scope, binding, issued_at, expires_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (jti) DO NOTHING"
)
_AUDIT = "INSERT INTO audit_records (seq, at, event, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)"
_TAIL = "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1"
_MICROS = 1_000_000

SqlRow = tuple[str, str, str, str, str, str, int, int]


async def record_issuance(worker: SqliteWorker, tokens: Sequence[LedgerRow], events: Sequence[Stamped]) -> None:
    """:meth:`broker.store.base.Store.record_issuance` on SQLite."""
    check_rows(tokens)
    check_stamped(events)
    if not tokens and not events:
        return
    rows: list[SqlRow] = [
        (jti, kid, subject, audience_json(audience), " ".join(scope), binding, iat * _MICROS, exp * _MICROS)
        for jti, kid, subject, audience, scope, binding, iat, exp in tokens
    ]
    await worker.run(lambda conn: _write(conn, rows, events))


def _write(conn: sqlite3.Connection, rows: list[SqlRow], events: Sequence[Stamped]) -> None:
    with immediate(conn):
        if rows:
            conn.executemany(_LEDGER, rows)
        if events:
            tail = conn.execute(_TAIL).fetchone()
            conn.executemany(_AUDIT, chained_rows(None if tail is None else (int(tail[0]), bytes(tail[1])), events))
