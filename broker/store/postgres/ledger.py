"""The issuance ledger on PostgreSQL: a batch is one transaction, pipelined; a repeated ``jti`` is skipped
(``ON CONFLICT DO NOTHING``, PostgreSQL 15 docs, "INSERT", the ON CONFLICT clause)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from broker.events.revocations import SubjectPattern
from broker.store.base import prefix_bounds
from broker.store.postgres._pool import Pool, connection
from broker.tokens.keystore import check_instant
from broker.tokens.ledger import DEFAULT_TOP, BlastRadius, LedgerEntry, check_limit, ranked

__all__ = ["PostgresLedger"]

# A batch goes in by COPY (PostgreSQL 15 docs, "COPY"; about half the client CPU of a pipelined INSERT per row)
# into a per-session temporary table emptied at commit, then on into the ledger skipping repeated jtis.
_BATCH_TABLE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS issued_tokens_batch (LIKE issued_tokens INCLUDING DEFAULTS) "
    "ON COMMIT DELETE ROWS"
)
_COLUMNS = "jti, kid, subject, audience, scope, binding, issued_at, expires_at"
_COPY = f"COPY issued_tokens_batch ({_COLUMNS}) FROM STDIN"
_FROM_BATCH = (
    f"INSERT INTO issued_tokens ({_COLUMNS}) SELECT {_COLUMNS} FROM issued_tokens_batch ON CONFLICT (jti) DO NOTHING"  # noqa: S608
)
_LIVE = "FROM issued_tokens WHERE kid = %s AND expires_at > %s"
# Ties in code point order, as the other stores sort them (the "C" collation, not the database's locale).
_TOP_SUBJECTS = f'SELECT subject, count(*) AS n {_LIVE} GROUP BY subject ORDER BY n DESC, subject COLLATE "C" LIMIT %s'


class PostgresLedger:
    def __init__(self, pool: Pool, store: str) -> None:
        self._pool = pool
        self._store = store

    async def record(self, entries: Sequence[LedgerEntry]) -> None:
        if not entries:
            return
        rows = [_row(e) for e in entries]
        async with connection(self._pool, self._store) as conn, conn.transaction(), conn.cursor() as cursor:
            await cursor.execute(_BATCH_TABLE)
            async with cursor.copy(_COPY) as copy:
                for row in rows:
                    await copy.write_row(row)
            await cursor.execute(_FROM_BATCH)

    async def blast_radius(self, kid: str, now: datetime, *, top: int = DEFAULT_TOP) -> BlastRadius:
        check_instant(now)
        async with connection(self._pool, self._store) as conn:
            cursor = await conn.execute(f"SELECT count(*), max(expires_at), count(DISTINCT subject) {_LIVE}",
                                        (kid, now))  # fmt: skip
            row = await cursor.fetchone()
            assert row is not None
            cursor = await conn.execute(_TOP_SUBJECTS, (kid, now, top))
            subjects = await cursor.fetchall()
            cursor = await conn.execute(f"SELECT audience, count(*) {_LIVE} GROUP BY audience", (kid, now))
            grouped = await cursor.fetchall()
        audiences: Counter[str] = Counter()
        for audience, n in grouped:
            for name in json.loads(audience):
                audiences[name] += int(n)
        return BlastRadius(
            kid=kid,
            live_tokens=int(row[0]),
            subjects=tuple((str(s), int(n)) for s, n in subjects),
            audiences=ranked(dict(audiences), top),
            valid_until=row[1],
            distinct_subjects=int(row[2]),
        )

    async def prune(self, expired_before: datetime) -> int:
        check_instant(expired_before)
        async with connection(self._pool, self._store) as conn, conn.transaction():
            cursor = await conn.execute("DELETE FROM issued_tokens WHERE expires_at < %s", (expired_before,))
            return cursor.rowcount

    async def live_tokens(
        self, pattern: SubjectPattern, now: datetime, *, limit: int | None = None
    ) -> list[tuple[str, datetime]]:
        check_instant(now)
        check_limit(limit)
        subject = prefix_bounds(pattern) if pattern.is_prefix else (pattern.text,)
        async with connection(self._pool, self._store) as conn:
            cursor = await conn.execute(_LIVE_BY_SUBJECT[pattern.is_prefix], (*subject, now, limit))
            return [(str(jti), expires_at) for jti, expires_at in await cursor.fetchall()]


def _row(e: LedgerEntry) -> tuple[object, ...]:
    audience = json.dumps(list(e.audience), separators=(",", ":"))
    return (e.jti, e.kid, e.subject, audience, " ".join(e.scope), e.binding, e.issued_at, e.expires_at)


# The subject index (issued_tokens_by_subject, in the "C" collation): equality, or the prefix's range in code point
# order whatever the database's collation; LIMIT NULL is no limit (PostgreSQL 15 docs, 7.6 "LIMIT and OFFSET").
_LIVE_BY_SUBJECT = {
    False: 'SELECT jti, expires_at FROM issued_tokens WHERE subject COLLATE "C" = %s AND expires_at > %s '
    'ORDER BY expires_at, jti COLLATE "C" LIMIT %s',
    True: 'SELECT jti, expires_at FROM issued_tokens WHERE subject COLLATE "C" >= %s AND subject COLLATE "C" < %s '
    'AND expires_at > %s ORDER BY expires_at, jti COLLATE "C" LIMIT %s',
}
