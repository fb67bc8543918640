"""The API-key exception registry on SQLite: each change, its versions and its ``apikeys`` bump in one
``BEGIN IMMEDIATE`` transaction.

``BEGIN IMMEDIATE`` takes the file's write lock before the stored record is read (SQLite "Transaction", §2.2), so
the compare-and-set on ``revision`` cannot interleave with another process's change: the rules of
:mod:`broker.store.apikey_rows` run on the row as it is, and a refusal rolls everything back (no bump). A taken
name is found by ``INSERT ... ON CONFLICT (name) DO NOTHING RETURNING`` (SQLite "UPSERT", "RETURNING"). Use rows
are upserted in key order, adding counts and keeping the later time; rows of unknown exceptions insert nothing
(``INSERT ... SELECT ... WHERE EXISTS``). Reads are one statement each. Times are integer microseconds, UTC.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from broker.apikeys.model import ApiKeyException, SealedVersion, UseRecord
from broker.errors import StoreConflictError
from broker.events.topics import APIKEYS
from broker.store.apikey_rows import (
    EXCEPTION_COLUMNS,
    USE_COLUMNS,
    VERSION_COLUMNS,
    added,
    check_uses,
    exception_of,
    exception_params,
    name_taken,
    rotated,
    updated,
    use_of,
    version_of,
)
from broker.store.sqlite._worker import SqliteWorker, from_micros, immediate, to_micros
from broker.store.sqlite.changes import bump

__all__ = ["SqliteApiKeyStore"]

_SELECT = f"SELECT {EXCEPTION_COLUMNS} FROM apikey_exceptions"  # noqa: S608
_INSERT = (
    f"INSERT INTO apikey_exceptions ({EXCEPTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "  # noqa: S608
    "ON CONFLICT (name) DO NOTHING RETURNING name"
)
_REPLACE = (
    "UPDATE apikey_exceptions SET revision = ?, state = ?, current_version = ?, expires_at = ?, created_at = ?, "
    "updated_at = ?, body = ? WHERE name = ?"
)
_VERSIONS = f"SELECT {VERSION_COLUMNS} FROM apikey_versions"  # noqa: S608
_ADD_VERSION = f"INSERT INTO apikey_versions ({VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL)"  # noqa: S608
_SUPERSEDE = "UPDATE apikey_versions SET superseded_at = ? WHERE name = ? AND version = ?"
_REWRAP = "UPDATE apikey_versions SET sealed = ?, kek_id = ? WHERE name = ? AND version = ? AND kek_id = ?"
_ADD_USE = (
    f"INSERT INTO apikey_uses ({USE_COLUMNS}) SELECT ?, ?, ?, ?, ?, ? "  # noqa: S608
    "WHERE EXISTS (SELECT 1 FROM apikey_exceptions WHERE name = ?) "
    "ON CONFLICT (name, spiffe_id, version, target) DO UPDATE SET count = apikey_uses.count + excluded.count, "
    "last_used_at = max(apikey_uses.last_used_at, excluded.last_used_at)"
)
_USES = f"SELECT {USE_COLUMNS} FROM apikey_uses"  # noqa: S608
_USE_ORDER = "ORDER BY name, spiffe_id, version, target"


def _exception(row: tuple[Any, ...]) -> ApiKeyException:
    return exception_of(row, from_micros)


def _version(row: tuple[Any, ...]) -> SealedVersion:
    return version_of(row, from_micros)


def _stored(conn: sqlite3.Connection, name: str) -> ApiKeyException | None:
    row = conn.execute(f"{_SELECT} WHERE name = ?", (name,)).fetchone()
    return None if row is None else _exception(row)


class SqliteApiKeyStore:
    def __init__(self, worker: SqliteWorker) -> None:
        self._worker = worker

    async def add(self, record: ApiKeyException, sealed: bytes, kek_id: str, *, at: datetime) -> ApiKeyException:
        stored = added(record, at)
        await self._worker.run(lambda conn: _add(conn, stored, bytes(sealed), kek_id))
        return stored

    async def get(self, name: str) -> ApiKeyException | None:
        return await self._worker.run(lambda conn: _stored(conn, name))

    async def list_all(self) -> tuple[ApiKeyException, ...]:
        rows = await self._worker.run(lambda conn: conn.execute(f"{_SELECT} ORDER BY name").fetchall())
        return tuple(_exception(row) for row in rows)

    async def update(self, record: ApiKeyException, *, at: datetime) -> ApiKeyException:
        return await self._worker.run(lambda conn: _update(conn, record, at))

    async def rotate(
        self, name: str, revision: int, sealed: bytes, kek_id: str, *, at: datetime
    ) -> tuple[ApiKeyException, SealedVersion]:
        return await self._worker.run(lambda conn: _rotate(conn, name, revision, bytes(sealed), kek_id, at))

    async def versions(self, name: str) -> tuple[SealedVersion, ...]:
        sql = f"{_VERSIONS} WHERE name = ? ORDER BY version"
        rows = await self._worker.run(lambda conn: conn.execute(sql, (name,)).fetchall())
        return tuple(_version(row) for row in rows)

    async def all_versions(self) -> tuple[SealedVersion, ...]:
        rows = await self._worker.run(lambda conn: conn.execute(f"{_VERSIONS} ORDER BY name, version").fetchall())
        return tuple(_version(row) for row in rows)

    async def rewrap(self, name: str, version: int, old_kek_id: str, sealed: bytes, kek_id: str) -> bool:
        params = (bytes(sealed), kek_id, name, version, old_kek_id)

        def rewrap(conn: sqlite3.Connection) -> bool:
            with immediate(conn):
                return conn.execute(_REWRAP, params).rowcount == 1

        return await self._worker.run(rewrap)

    async def record_uses(self, uses: Sequence[UseRecord]) -> None:
        check_uses(uses)
        rows = sorted((u.name, u.spiffe_id, u.version, u.target, u.count, to_micros(u.last_used_at), u.name)
                      for u in uses)  # fmt: skip
        if rows:
            await self._worker.run(lambda conn: _record_uses(conn, rows))

    async def uses(self, name: str | None = None) -> tuple[UseRecord, ...]:
        where, params = ("", ()) if name is None else ("WHERE name = ?", (name,))
        sql = f"{_USES} {where} {_USE_ORDER}"
        rows = await self._worker.run(lambda conn: conn.execute(sql, params).fetchall())
        return tuple(use_of(row, from_micros) for row in rows)


def _add(conn: sqlite3.Connection, stored: ApiKeyException, sealed: bytes, kek_id: str) -> None:
    with immediate(conn):
        if conn.execute(_INSERT, exception_params(stored, to_micros)).fetchone() is None:
            raise StoreConflictError(name_taken(stored.name))
        conn.execute(_ADD_VERSION, (stored.name, 1, sealed, kek_id, to_micros(stored.created_at)))
        bump(conn, APIKEYS)


def _write(conn: sqlite3.Connection, record: ApiKeyException) -> None:
    name, *rest = exception_params(record, to_micros)
    conn.execute(_REPLACE, (*rest, name))
    bump(conn, APIKEYS)


def _update(conn: sqlite3.Connection, record: ApiKeyException, at: datetime) -> ApiKeyException:
    with immediate(conn):
        stored = updated(_stored(conn, record.name), record, at)
        _write(conn, stored)
    return stored


def _rotate(
    conn: sqlite3.Connection, name: str, revision: int, sealed: bytes, kek_id: str, at: datetime
) -> tuple[ApiKeyException, SealedVersion]:
    with immediate(conn):
        stored = rotated(_stored(conn, name), name, revision, at)
        when = to_micros(stored.updated_at)
        conn.execute(_SUPERSEDE, (when, name, stored.current_version - 1))
        conn.execute(_ADD_VERSION, (name, stored.current_version, sealed, kek_id, when))
        _write(conn, stored)
    assert stored.updated_at is not None
    return stored, SealedVersion(name, stored.current_version, sealed, kek_id, stored.updated_at)


def _record_uses(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    with immediate(conn):
        conn.executemany(_ADD_USE, rows)
