"""The client registry on PostgreSQL: each change and its ``clients`` bump (with its ``NOTIFY``) in one transaction.

A taken ``client_id`` is found by ``INSERT ... ON CONFLICT (client_id) DO NOTHING RETURNING`` (PostgreSQL 15
docs, SQL command INSERT, "ON CONFLICT Clause": no row back means nothing was inserted; a concurrent insert of the
same id waits for the first to commit), then refused inside the transaction, which rolls back: no bump, no
notification. ``list_all`` orders by ``client_id COLLATE "C"``: code point order whatever the database's
collation (24.2 "Collation Support"), the order of the other engines.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from broker.errors import StoreConflictError
from broker.events.topics import CLIENTS
from broker.store.client_rows import CLIENT_COLUMNS, client_of, stamp, taken
from broker.store.postgres._pool import Pool, connection
from broker.store.postgres.changes import bump
from broker.tokens.clients import RegisteredClient
from broker.tokens.keystore import check_instant

__all__ = ["PostgresClientRegistry"]

_INSERT = (
    f"INSERT INTO clients ({CLIENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "  # noqa: S608
    f"ON CONFLICT (client_id) DO NOTHING RETURNING {CLIENT_COLUMNS}"
)
_SELECT = f"SELECT {CLIENT_COLUMNS} FROM clients"  # noqa: S608
_DISABLE = f"UPDATE clients SET disabled = %s, updated_at = %s WHERE client_id = %s RETURNING {CLIENT_COLUMNS}"  # noqa: S608
_REMOVE = "DELETE FROM clients WHERE client_id = %s RETURNING client_id"


class PostgresClientRegistry:
    def __init__(self, pool: Pool, store: str) -> None:
        self._pool = pool
        self._store = store

    async def add(self, client: RegisteredClient, *, at: datetime | None = None) -> RegisteredClient:
        row = stamp(client, at)
        c = row.client
        params = (c.client_id, c.spiffe_id, row.jwks, c.jwks_uri, row.algorithms, c.max_assertion_lifetime,
                  c.disabled, row.at, row.at)  # fmt: skip
        async with connection(self._pool, self._store) as conn, conn.transaction():
            inserted = await (await conn.execute(_INSERT, params)).fetchone()
            if inserted is None:
                raise StoreConflictError(taken(c.client_id))
            await bump(conn, CLIENTS)
        return client_of(inserted)

    async def get(self, client_id: str) -> RegisteredClient | None:
        async with connection(self._pool, self._store) as conn:
            found = await (await conn.execute(f"{_SELECT} WHERE client_id = %s", (client_id,))).fetchone()
        return None if found is None else client_of(found)

    async def list_all(self) -> tuple[RegisteredClient, ...]:
        async with connection(self._pool, self._store) as conn:
            rows = await (await conn.execute(f'{_SELECT} ORDER BY client_id COLLATE "C"')).fetchall()
        return tuple(client_of(row) for row in rows)

    async def set_disabled(self, client_id: str, disabled: bool, *, at: datetime) -> RegisteredClient | None:
        found = await self._changed(_DISABLE, (disabled, check_instant(at), client_id))
        return None if found is None else client_of(found)

    async def remove(self, client_id: str) -> bool:
        return await self._changed(_REMOVE, (client_id,)) is not None

    async def _changed(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """``sql`` (an UPDATE or DELETE ... RETURNING) and, if it touched the row, the ``clients`` bump."""
        async with connection(self._pool, self._store) as conn, conn.transaction():
            found = await (await conn.execute(sql, params)).fetchone()
            if found is not None:
                await bump(conn, CLIENTS)
        return found
