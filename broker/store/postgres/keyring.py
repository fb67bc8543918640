"""The signing keyring on PostgreSQL: compare-and-set moves in one transaction.

Under READ COMMITTED, an ``UPDATE ... WHERE kid = $1 AND state = $2`` that meets a row another transaction is
changing waits for it, then re-checks its ``WHERE`` against the committed row (PostgreSQL 15 docs, 13.2.1 "Read
Committed Isolation Level"): so of two replicas moving the same key, the second updates nothing and returns False.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from broker.errors import StoreConflictError
from broker.events.topics import KEYRING
from broker.store.base import KEY_COLUMNS, TWO_ACTIVE, CompareFailed, duplicate_kid, move_statements, unknown_kid
from broker.store.postgres._pool import Conn, Pool, connection
from broker.store.postgres.changes import bump
from broker.tokens.keystore import KeyRecord, KeyringChange, KeyState

__all__ = ["PostgresKeyring"]

_MOVE = move_statements("%s")


class PostgresKeyring:
    def __init__(self, pool: Pool, store: str) -> None:
        self._pool = pool
        self._store = store

    async def keys(self) -> Sequence[KeyRecord]:
        async with connection(self._pool, self._store) as conn:
            cursor = await conn.execute(f"SELECT {KEY_COLUMNS} FROM signing_keys ORDER BY created_at, kid")  # noqa: S608
            rows = await cursor.fetchall()
        return [KeyRecord(r[0], r[1], KeyState(r[2]), bytes(r[3]), r[4], r[5], r[6], r[7], r[8], r[9]) for r in rows]

    async def apply(self, change: KeyringChange) -> bool:
        try:
            async with connection(self._pool, self._store) as conn, conn.transaction():
                for move in change.ordered_moves():
                    await self._move(conn, move.kid, move.expected, move.new, change)
                for key in change.adds:
                    await self._insert(conn, key)
                await bump(conn, KEYRING)
        except CompareFailed:
            return False
        return True

    async def rewrap(self, kid: str, expected_kek_id: str, wrapped_key: bytes, kek_id: str) -> bool:
        async with connection(self._pool, self._store) as conn, conn.transaction():
            cursor = await conn.execute(
                "UPDATE signing_keys SET wrapped_key = %s, kek_id = %s WHERE kid = %s AND kek_id = %s",
                (wrapped_key, kek_id, kid, expected_kek_id),
            )
            if cursor.rowcount == 1:
                return True
            found = await (await conn.execute("SELECT 1 FROM signing_keys WHERE kid = %s", (kid,))).fetchone()
        if found is None:
            raise StoreConflictError(unknown_kid(kid))
        return False

    @staticmethod
    async def _move(conn: Conn, kid: str, expected: KeyState, new: KeyState, change: KeyringChange) -> None:
        try:
            cursor = await conn.execute(_MOVE[new], (new.value, change.at, kid, expected.value))
        except psycopg.errors.UniqueViolation:
            raise StoreConflictError(TWO_ACTIVE) from None
        if cursor.rowcount == 1:
            return
        found = await (await conn.execute("SELECT 1 FROM signing_keys WHERE kid = %s", (kid,))).fetchone()
        if found is None:
            raise StoreConflictError(unknown_kid(kid))
        raise CompareFailed

    @staticmethod
    async def _insert(conn: Conn, key: KeyRecord) -> None:
        try:
            await conn.execute(
                f"INSERT INTO signing_keys ({KEY_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",  # noqa: S608
                (
                    key.kid,
                    key.algorithm,
                    key.state.value,
                    key.wrapped_key,
                    key.kek_id,
                    key.public_jwk,
                    key.created_at,
                    key.activated_at,
                    key.retiring_at,
                    key.retired_at,
                ),
            )
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "signing_keys_pkey":
                raise StoreConflictError(duplicate_kid(key.kid)) from None
            raise StoreConflictError(TWO_ACTIVE) from None
