"""The client registry on SQLite: each change and its ``clients`` counter bump in one ``BEGIN IMMEDIATE``.

A taken ``client_id`` is found by ``INSERT ... ON CONFLICT (client_id) DO NOTHING RETURNING`` (SQLite "UPSERT",
"RETURNING": no row back means nothing was inserted), then refused inside the transaction, which rolls back: no
bump. Reads are one statement each (one snapshot). Times are integer microseconds, UTC.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from broker.errors import StoreConflictError
from broker.events.topics import CLIENTS
from broker.store.client_rows import CLIENT_COLUMNS, ClientRow, client_of, stamp, taken
from broker.store.sqlite._worker import SqliteWorker, from_micros, immediate, to_micros
from broker.store.sqlite.changes import bump
from broker.tokens.clients import RegisteredClient
from broker.tokens.keystore import check_instant

__all__ = ["SqliteClientRegistry"]

_INSERT = (
    f"INSERT INTO clients ({CLIENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "  # noqa: S608
    f"ON CONFLICT (client_id) DO NOTHING RETURNING {CLIENT_COLUMNS}"
)
_SELECT = f"SELECT {CLIENT_COLUMNS} FROM clients"  # noqa: S608
_DISABLE = f"UPDATE clients SET disabled = ?, updated_at = ? WHERE client_id = ? RETURNING {CLIENT_COLUMNS}"  # noqa: S608


def _client(row: tuple[object, ...]) -> RegisteredClient:
    return client_of(row, from_micros)


class SqliteClientRegistry:
    def __init__(self, worker: SqliteWorker) -> None:
        self._worker = worker

    async def add(self, client: RegisteredClient, *, at: datetime | None = None) -> RegisteredClient:
        row = stamp(client, at)
        return _client(await self._worker.run(lambda conn: _add(conn, row)))

    async def get(self, client_id: str) -> RegisteredClient | None:
        found = await self._worker.run(
            lambda conn: conn.execute(f"{_SELECT} WHERE client_id = ?", (client_id,)).fetchone()
        )
        return None if found is None else _client(found)

    async def list_all(self) -> tuple[RegisteredClient, ...]:
        rows = await self._worker.run(lambda conn: conn.execute(f"{_SELECT} ORDER BY client_id").fetchall())
        return tuple(_client(row) for row in rows)

    async def set_disabled(self, client_id: str, disabled: bool, *, at: datetime) -> RegisteredClient | None:
        params = (int(disabled), to_micros(check_instant(at)), client_id)
        found = await self._worker.run(lambda conn: _changed(conn, _DISABLE, params))
        return None if found is None else _client(found)

    async def remove(self, client_id: str) -> bool:
        sql = "DELETE FROM clients WHERE client_id = ? RETURNING client_id"
        return await self._worker.run(lambda conn: _changed(conn, sql, (client_id,))) is not None


def _add(conn: sqlite3.Connection, row: ClientRow) -> tuple[object, ...]:
    c, at = row.client, to_micros(row.at)
    params = (c.client_id, c.spiffe_id, row.jwks, c.jwks_uri, row.algorithms, c.max_assertion_lifetime,
              int(c.disabled), at, at)  # fmt: skip
    with immediate(conn):
        inserted = conn.execute(_INSERT, params).fetchone()
        if inserted is None:
            raise StoreConflictError(taken(c.client_id))
        bump(conn, CLIENTS)
    return tuple(inserted)


def _changed(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> tuple[object, ...] | None:
    """``sql`` (an UPDATE or DELETE ... RETURNING) and, if it touched the row, the ``clients`` bump: one commit."""
    with immediate(conn):
        found = conn.execute(sql, params).fetchone()
        if found is not None:
            bump(conn, CLIENTS)
    return None if found is None else tuple(found)
