"""The token endpoint's batches on PostgreSQL: ledger rows and audit records in one transaction.

The ledger rows go by ``COPY`` (PostgreSQL 15 docs, "COPY") into a per-session temporary table emptied at commit,
their times as whole seconds (``to_timestamp`` is exact for them), then on into the ledger skipping repeated
``jti``s (``ON CONFLICT DO NOTHING``). Then the batch takes the journal's advisory lock (9.27.10 "Advisory Lock
Functions"), reads the chain's tail, and copies its records after it; the lock is held until the commit, so
replicas append to one chain. The ledger part comes first so that the lock is held for as short a time as it can.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from broker.audit.journal import Stamped, chained_rows, check_stamped
from broker.store.base import audience_json
from broker.store.postgres._pool import AUDIT_LOCK, Pool, connection
from broker.tokens.ledger import LedgerRow, check_rows

__all__ = ["record_issuance"]

_COLUMNS = "jti, kid, subject, audience, scope, binding, issued_at, expires_at"
_ROWS_TABLE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS issued_token_rows (jti text, kid text, subject text, audience text, "
    "scope text, binding text, issued_at bigint, expires_at bigint) ON COMMIT DELETE ROWS"
)
_COPY_ROWS = f"COPY issued_token_rows ({_COLUMNS}) FROM STDIN"
_FROM_ROWS = (
    f"INSERT INTO issued_tokens ({_COLUMNS}) SELECT jti, kid, subject, audience, scope, binding, "  # noqa: S608
    "to_timestamp(issued_at), to_timestamp(expires_at) FROM issued_token_rows ON CONFLICT (jti) DO NOTHING"
)
_TAIL = "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1"
_COPY_AUDIT = "COPY audit_records (seq, at, event, body, prev_hash, hash) FROM STDIN"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def record_issuance(pool: Pool, store: str, tokens: Sequence[LedgerRow], events: Sequence[Stamped]) -> None:
    """:meth:`broker.store.base.Store.record_issuance` on PostgreSQL."""
    check_rows(tokens)
    check_stamped(events)
    if not tokens and not events:
        return
    rows = [
        (jti, kid, subject, audience_json(audience), " ".join(scope), binding, iat, exp)
        for jti, kid, subject, audience, scope, binding, iat, exp in tokens
    ]
    async with connection(pool, store) as conn, conn.transaction(), conn.cursor() as cursor:
        if rows:
            await cursor.execute(_ROWS_TABLE)
            async with cursor.copy(_COPY_ROWS) as copy:
                for row in rows:
                    await copy.write_row(row)
            await cursor.execute(_FROM_ROWS)
        if events:
            await cursor.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK,))
            tail = await (await cursor.execute(_TAIL)).fetchone()
            chained = chained_rows(None if tail is None else (int(tail[0]), bytes(tail[1])), events)
            async with cursor.copy(_COPY_AUDIT) as copy:
                for seq, at, event, body, prev_hash, digest in chained:
                    await copy.write_row((seq, _EPOCH + timedelta(microseconds=at), event, body, prev_hash, digest))
