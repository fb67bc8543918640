"""The replay cache on PostgreSQL: one upsert, atomic across every replica sharing the database.

:meth:`PostgresReplayCache.add` runs one statement, on its own (the pool's connections are in autocommit mode: one
round trip, no ``BEGIN``/``COMMIT`` around it; a single statement is atomic by itself)::

    INSERT INTO replay_cache (key, expires_at) VALUES ($key, $expires_at)
    ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE replay_cache.expires_at <= $now
    RETURNING 1

``ON CONFLICT DO UPDATE`` guarantees an atomic insert-or-update outcome under concurrency (PostgreSQL 15 docs,
SQL command INSERT, "ON CONFLICT Clause"): of two replicas adding one key at once, the second waits for the
first's row, then finds it live and updates nothing. A row comes back only when the key was absent or expired,
and True is answered only after the commit. Anything else (an outage, a statement or client-side timeout, any
database error) is :class:`~broker.oauth.replay.ReplayCacheUnavailable`: fail closed, never True.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from broker.errors import StoreError
from broker.oauth.replay import ReplayCacheUnavailable, check_entry, check_now
from broker.store.postgres._pool import Pool, connection

__all__ = ["PostgresReplayCache"]

_ADD = (
    "INSERT INTO replay_cache (key, expires_at) VALUES (%s, %s) "
    "ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE replay_cache.expires_at <= %s "
    "RETURNING 1"
)


class PostgresReplayCache:
    def __init__(self, pool: Pool, store: str) -> None:
        self._pool = pool
        self._store = store

    async def add(self, key: str, *, now: datetime, expires_at: datetime) -> bool:
        check_entry(key, now, expires_at)
        try:
            async with connection(self._pool, self._store) as conn:
                row = await (await conn.execute(_ADD, (key, expires_at, now))).fetchone()
        except (StoreError, psycopg.Error) as exc:
            raise ReplayCacheUnavailable(f"the store did not record it ({type(exc).__name__})") from exc
        return row is not None

    async def prune(self, now: datetime) -> int:
        check_now(now)
        async with connection(self._pool, self._store) as conn:
            cursor = await conn.execute("DELETE FROM replay_cache WHERE expires_at <= %s", (now,))
            return cursor.rowcount
