"""The API-key exception registry on PostgreSQL: each change, its versions and its ``apikeys`` bump (with its
``NOTIFY``) in one transaction.

* A change reads the stored record ``SELECT ... FOR UPDATE``: a concurrent change of the same exception on another
  replica waits for the row lock and then reads the row as the first one committed it (PostgreSQL 15 docs, 13.2.1
  "Read Committed Isolation Level"), so the compare-and-set on ``revision`` (:mod:`broker.store.apikey_rows`)
  refuses the second: no lost update. A refusal rolls everything back: no bump, no notification.
* A taken name is found by ``INSERT ... ON CONFLICT (name) DO NOTHING RETURNING`` (SQL command INSERT, "ON
  CONFLICT Clause"); a concurrent add of the same name waits for the first to commit, then inserts nothing.
* Use rows are upserted in key order (so two replicas' batches lock rows in one order and never deadlock),
  adding counts and keeping the later time; rows of unknown exceptions insert nothing (``WHERE EXISTS``).
* Orders are ``COLLATE "C"``: code point order whatever the database's collation (24.2 "Collation Support"), the
  order of the other engines.
"""

from __future__ import annotations

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
from broker.store.postgres._pool import Conn, Pool, connection
from broker.store.postgres.changes import bump

__all__ = ["PostgresApiKeyStore"]

_SELECT = f"SELECT {EXCEPTION_COLUMNS} FROM apikey_exceptions"  # noqa: S608
_INSERT = (
    f"INSERT INTO apikey_exceptions ({EXCEPTION_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "  # noqa: S608
    "ON CONFLICT (name) DO NOTHING RETURNING name"
)
_REPLACE = (
    "UPDATE apikey_exceptions SET revision = %s, state = %s, current_version = %s, expires_at = %s, "
    "created_at = %s, updated_at = %s, body = %s WHERE name = %s"
)
_VERSIONS = f"SELECT {VERSION_COLUMNS} FROM apikey_versions"  # noqa: S608
_ADD_VERSION = f"INSERT INTO apikey_versions ({VERSION_COLUMNS}) VALUES (%s, %s, %s, %s, %s, NULL)"  # noqa: S608
_SUPERSEDE = "UPDATE apikey_versions SET superseded_at = %s WHERE name = %s AND version = %s"
_REWRAP = (
    "UPDATE apikey_versions SET sealed = %s, kek_id = %s WHERE name = %s AND version = %s AND kek_id = %s "
    "RETURNING version"
)
_ADD_USE = (
    f"INSERT INTO apikey_uses ({USE_COLUMNS}) SELECT %s, %s, %s, %s, %s, %s "  # noqa: S608
    "WHERE EXISTS (SELECT 1 FROM apikey_exceptions WHERE name = %s) "
    "ON CONFLICT (name, spiffe_id, version, target) DO UPDATE SET count = apikey_uses.count + excluded.count, "
    "last_used_at = greatest(apikey_uses.last_used_at, excluded.last_used_at)"
)
_USES = f"SELECT {USE_COLUMNS} FROM apikey_uses"  # noqa: S608
_USE_ORDER = 'ORDER BY name COLLATE "C", spiffe_id COLLATE "C", version, target COLLATE "C"'


def _as_is(at: datetime) -> datetime:
    return at


async def _stored(conn: Conn, name: str) -> ApiKeyException | None:
    """The stored record of ``name``, locked until the transaction ends."""
    row = await (await conn.execute(f"{_SELECT} WHERE name = %s FOR UPDATE", (name,))).fetchone()
    return None if row is None else exception_of(row)


async def _write(conn: Conn, record: ApiKeyException) -> None:
    name, *rest = exception_params(record, _as_is)
    await conn.execute(_REPLACE, (*rest, name))
    await bump(conn, APIKEYS)


class PostgresApiKeyStore:
    def __init__(self, pool: Pool, store: str) -> None:
        self._pool = pool
        self._store = store

    async def add(self, record: ApiKeyException, sealed: bytes, kek_id: str, *, at: datetime) -> ApiKeyException:
        stored = added(record, at)
        async with connection(self._pool, self._store) as conn, conn.transaction():
            inserted = await (await conn.execute(_INSERT, exception_params(stored, _as_is))).fetchone()
            if inserted is None:
                raise StoreConflictError(name_taken(stored.name))
            await conn.execute(_ADD_VERSION, (stored.name, 1, bytes(sealed), kek_id, stored.created_at))
            await bump(conn, APIKEYS)
        return stored

    async def get(self, name: str) -> ApiKeyException | None:
        async with connection(self._pool, self._store) as conn:
            row = await (await conn.execute(f"{_SELECT} WHERE name = %s", (name,))).fetchone()
        return None if row is None else exception_of(row)

    async def list_all(self) -> tuple[ApiKeyException, ...]:
        async with connection(self._pool, self._store) as conn:
            rows = await (await conn.execute(f'{_SELECT} ORDER BY name COLLATE "C"')).fetchall()
        return tuple(exception_of(row) for row in rows)

    async def update(self, record: ApiKeyException, *, at: datetime) -> ApiKeyException:
        async with connection(self._pool, self._store) as conn, conn.transaction():
            stored = updated(await _stored(conn, record.name), record, at)
            await _write(conn, stored)
        return stored

    async def rotate(
        self, name: str, revision: int, sealed: bytes, kek_id: str, *, at: datetime
    ) -> tuple[ApiKeyException, SealedVersion]:
        async with connection(self._pool, self._store) as conn, conn.transaction():
            stored = rotated(await _stored(conn, name), name, revision, at)
            await conn.execute(_SUPERSEDE, (stored.updated_at, name, stored.current_version - 1))
            await conn.execute(_ADD_VERSION, (name, stored.current_version, bytes(sealed), kek_id, stored.updated_at))
            await _write(conn, stored)
        assert stored.updated_at is not None
        return stored, SealedVersion(name, stored.current_version, bytes(sealed), kek_id, stored.updated_at)

    async def versions(self, name: str) -> tuple[SealedVersion, ...]:
        return await self._versions(f"{_VERSIONS} WHERE name = %s ORDER BY version", (name,))

    async def all_versions(self) -> tuple[SealedVersion, ...]:
        return await self._versions(f'{_VERSIONS} ORDER BY name COLLATE "C", version', ())

    async def rewrap(self, name: str, version: int, old_kek_id: str, sealed: bytes, kek_id: str) -> bool:
        async with connection(self._pool, self._store) as conn:
            cursor = await conn.execute(_REWRAP, (bytes(sealed), kek_id, name, version, old_kek_id))
            return await cursor.fetchone() is not None

    async def record_uses(self, uses: Sequence[UseRecord]) -> None:
        check_uses(uses)
        rows = sorted((u.name, u.spiffe_id, u.version, u.target, u.count, u.last_used_at, u.name) for u in uses)
        if not rows:
            return
        async with connection(self._pool, self._store) as conn, conn.transaction(), conn.cursor() as cursor:
            await cursor.executemany(_ADD_USE, rows)

    async def uses(self, name: str | None = None) -> tuple[UseRecord, ...]:
        where, params = ("", ()) if name is None else ("WHERE name = %s", (name,))
        async with connection(self._pool, self._store) as conn:
            rows = await (await conn.execute(f"{_USES} {where} {_USE_ORDER}", params)).fetchall()
        return tuple(use_of(row) for row in rows)

    async def _versions(self, sql: str, params: tuple[Any, ...]) -> tuple[SealedVersion, ...]:
        async with connection(self._pool, self._store) as conn:
            rows = await (await conn.execute(sql, params)).fetchall()
        return tuple(version_of(row) for row in rows)
