"""The replay cache on SQLite: one upsert under the file's write lock, so every process on the file agrees.

:meth:`SqliteReplayCache.add` is one ``BEGIN IMMEDIATE`` transaction (SQLite "Transaction", §2.2: the write lock
is taken before anything is read) holding one statement::

    INSERT INTO replay_cache (key, expires_at) VALUES (:key, :expires_at)
    ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE replay_cache.expires_at <= :now
    RETURNING 1

A row comes back when the key was absent or its entry had expired (SQLite "UPSERT": the ``DO UPDATE`` runs only
where its ``WHERE`` holds; "RETURNING": one row per row inserted or updated), so True means recorded, and the
commit is durable (``synchronous=FULL``) before True is answered. A store that fails or stays locked past
``busy_timeout`` is :class:`~broker.oauth.replay.ReplayCacheUnavailable`: the caller refuses, never accepts.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from broker.errors import StoreError
from broker.oauth.replay import ReplayCacheUnavailable, check_entry, check_now
from broker.store.sqlite._worker import SqliteWorker, immediate, to_micros

__all__ = ["SqliteReplayCache"]

_ADD = (
    "INSERT INTO replay_cache (key, expires_at) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE replay_cache.expires_at <= ? "
    "RETURNING 1"
)


class SqliteReplayCache:
    def __init__(self, worker: SqliteWorker) -> None:
        self._worker = worker

    async def add(self, key: str, *, now: datetime, expires_at: datetime) -> bool:
        check_entry(key, now, expires_at)
        params = (key, to_micros(expires_at), to_micros(now))
        try:
            return await self._worker.run(lambda conn: _add(conn, params))
        except (StoreError, sqlite3.Error) as exc:
            raise ReplayCacheUnavailable(f"the store did not record it ({type(exc).__name__})") from exc

    async def prune(self, now: datetime) -> int:
        at = to_micros(check_now(now))
        return await self._worker.run(lambda conn: _prune(conn, at))


def _add(conn: sqlite3.Connection, params: tuple[object, ...]) -> bool:
    with immediate(conn):
        recorded = conn.execute(_ADD, params).fetchone() is not None
    return recorded


def _prune(conn: sqlite3.Connection, at: int | None) -> int:
    with immediate(conn):
        return conn.execute("DELETE FROM replay_cache WHERE expires_at <= ?", (at,)).rowcount
