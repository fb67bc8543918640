"""The revocation log on PostgreSQL: appenders take turns on one row, so ``seq`` is gap-free in commit order.

Why not a ``bigserial``: a sequence hands numbers out when rows are inserted, not when they commit. Two replicas
appending at once may take 7 and 8 and commit 8 first; a follower that reads then sees 8, carries on from it, and
never sees 7. A sequence also leaves a gap for every rolled-back append, which a follower cannot tell from a lost
entry. So every append starts with::

    UPDATE revocation_meta SET head = head + n RETURNING head

which locks the one ``revocation_meta`` row until the transaction ends. Under READ COMMITTED a second appender's
``UPDATE`` waits for that lock and then works on the row as the first one committed it (PostgreSQL 15 docs,
13.2.1 "Read Committed Isolation Level"), so it numbers its entries after the first one's, and it can commit only
after the first did: numbers are handed out in commit order, and a rolled-back append hands none out. It is also
why the numbers come from ``head`` and not from ``max(seq) + 1`` (which would hand out the numbers of pruned
entries again). An advisory lock would serialise appenders as well; the row lock needs no lock key of its own,
and covers every writer of the row (:meth:`~PostgresRevocationLog.prune` too, which locks it first).

In the same transaction a release ends the quarantines of its pattern, and the ``revocations`` change counter is
bumped with a ``NOTIFY`` (:mod:`broker.store.postgres.changes`), delivered only if and when the append commits.

:meth:`~PostgresRevocationLog.read` and :meth:`~PostgresRevocationLog.snapshot` run in one ``REPEATABLE READ, READ
ONLY`` transaction: ``revocation_meta`` and the entries come from one snapshot (13.2.2), so a page never holds an
entry above its ``head`` nor lacks a committed one below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from broker.events.revocations import LogEntry, RevocationEvent
from broker.events.topics import REVOCATIONS
from broker.store.postgres._pool import Conn, Pool, connection
from broker.store.postgres.changes import bump
from broker.store.revocation_rows import RELEASED, Row, check_position, check_read, from_body, to_row
from broker.tokens.keystore import check_instant
from broker.tokens.revocation import LogPage

__all__ = ["PostgresRevocationLog"]

_INSERT = (
    "INSERT INTO revocation_log (seq, kind, target, body, cutoff_until, kept_until) VALUES (%s, %s, %s, %s, %s, %s)"
)
# The release's quarantines are cut off until their cutoff (earlier if an earlier release said so).
_END_QUARANTINES = (
    "UPDATE revocation_log SET kept_until = least(kept_until, cutoff_until) "
    "WHERE kind = 'subject.quarantined' AND target = %s RETURNING kept_until"
)
_SNAPSHOT_TRANSACTION = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
_META = "SELECT feed_id, head, horizon FROM revocation_meta"
_ENTRIES = "SELECT seq, kind, body FROM revocation_log"


class PostgresRevocationLog:
    def __init__(self, pool: Pool, store: str) -> None:
        self._pool = pool
        self._store = store

    async def append(self, events: Sequence[RevocationEvent]) -> tuple[LogEntry, ...]:
        rows = [to_row(event) for event in events]
        if not rows:
            return ()
        async with connection(self._pool, self._store) as conn, conn.transaction():
            cursor = await conn.execute("UPDATE revocation_meta SET head = head + %s RETURNING head", (len(rows),))
            head = await cursor.fetchone()
            assert head is not None
            first = int(head[0]) - len(rows) + 1
            await _insert(conn, first, rows)
            await bump(conn, REVOCATIONS)
        return tuple(LogEntry(seq, event) for seq, event in enumerate(events, first))

    async def read(self, after: int, *, limit: int = 1000) -> LogPage:
        check_read(after, limit)
        return await self._page("seq > %s ORDER BY seq LIMIT %s", (after, limit), after)

    async def snapshot(self, now: datetime) -> LogPage:
        check_instant(now)
        return await self._page("kept_until IS NULL OR kept_until > %s ORDER BY seq", (now,), None)

    async def prune(self, now: datetime) -> int:
        check_instant(now)
        async with connection(self._pool, self._store) as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM revocation_meta FOR UPDATE")  # after any append in flight
            cursor = await conn.execute("DELETE FROM revocation_log WHERE kept_until <= %s RETURNING seq", (now,))
            gone = [int(r[0]) for r in await cursor.fetchall()]
            if gone:
                await conn.execute("UPDATE revocation_meta SET horizon = greatest(horizon, %s)", (max(gone),))
        return len(gone)

    async def _page(self, where: str, params: tuple[Any, ...], after: int | None) -> LogPage:
        async with connection(self._pool, self._store) as conn, conn.transaction():
            await conn.execute(_SNAPSHOT_TRANSACTION)
            meta = await (await conn.execute(_META)).fetchone()
            assert meta is not None
            feed_id, head, horizon = str(meta[0]), int(meta[1]), int(meta[2])
            if after is not None:
                check_position(after, head, horizon)
            rows = await (await conn.execute(f"{_ENTRIES} WHERE {where}", params)).fetchall()
        entries = tuple(LogEntry(int(seq), from_body(int(seq), kind, body)) for seq, kind, body in rows)
        return LogPage(feed_id, entries, head, horizon)


async def _insert(conn: Conn, first: int, rows: list[Row]) -> None:
    """Insert ``rows`` as ``first``, ``first + 1``, ...; a release ends its quarantines (written before it)."""
    pending: list[tuple[object, ...]] = []
    async with conn.cursor() as cursor:
        for seq, row in enumerate(rows, first):
            kept = row.kept_until
            if row.kind == RELEASED:
                if pending:
                    await cursor.executemany(_INSERT, pending)
                    pending.clear()
                await cursor.execute(_END_QUARANTINES, (row.target,))
                ends = [r[0] for r in await cursor.fetchall()]
                kept = max([*ends, *([] if kept is None else [kept])], default=None)
            pending.append((seq, row.kind, row.target, row.body, row.cutoff_until, kept))
        if pending:
            await cursor.executemany(_INSERT, pending)
