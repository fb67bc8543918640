"""The signing keyring on SQLite: compare-and-set moves inside one ``BEGIN IMMEDIATE`` transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from broker.errors import StoreConflictError
from broker.events.topics import KEYRING
from broker.store.base import KEY_COLUMNS, TWO_ACTIVE, CompareFailed, duplicate_kid, move_statements, unknown_kid
from broker.store.sqlite._worker import SqliteWorker, from_micros, immediate, to_micros
from broker.store.sqlite.changes import bump
from broker.tokens.keystore import KeyRecord, KeyringChange, KeyState

__all__ = ["SqliteKeyring"]

_MOVE = move_statements("?")


class SqliteKeyring:
    def __init__(self, worker: SqliteWorker) -> None:
        self._worker = worker

    async def keys(self) -> Sequence[KeyRecord]:
        return await self._worker.run(_keys)

    async def apply(self, change: KeyringChange) -> bool:
        return await self._worker.run(lambda conn: _apply(conn, change))

    async def rewrap(self, kid: str, expected_kek_id: str, wrapped_key: bytes, kek_id: str) -> bool:
        return await self._worker.run(lambda conn: _rewrap(conn, kid, expected_kek_id, wrapped_key, kek_id))


def _rewrap(conn: sqlite3.Connection, kid: str, expected_kek_id: str, wrapped_key: bytes, kek_id: str) -> bool:
    with immediate(conn):
        cursor = conn.execute(
            "UPDATE signing_keys SET wrapped_key = ?, kek_id = ? WHERE kid = ? AND kek_id = ?",
            (wrapped_key, kek_id, kid, expected_kek_id),
        )
        if cursor.rowcount == 1:
            return True
        if conn.execute("SELECT 1 FROM signing_keys WHERE kid = ?", (kid,)).fetchone() is None:
            raise StoreConflictError(unknown_kid(kid))
        return False


def _keys(conn: sqlite3.Connection) -> list[KeyRecord]:
    rows = conn.execute(f"SELECT {KEY_COLUMNS} FROM signing_keys ORDER BY created_at, kid").fetchall()  # noqa: S608
    return [
        KeyRecord(
            kid=r[0],
            algorithm=r[1],
            state=KeyState(r[2]),
            wrapped_key=bytes(r[3]),
            kek_id=r[4],
            public_jwk=r[5],
            created_at=from_micros(r[6]),  # type: ignore[arg-type]  # NOT NULL
            activated_at=from_micros(r[7]),
            retiring_at=from_micros(r[8]),
            retired_at=from_micros(r[9]),
        )
        for r in rows
    ]


def _apply(conn: sqlite3.Connection, change: KeyringChange) -> bool:
    try:
        with immediate(conn):
            for move in change.ordered_moves():
                try:
                    cursor = conn.execute(
                        _MOVE[move.new], (move.new.value, to_micros(change.at), move.kid, move.expected)
                    )
                except sqlite3.IntegrityError:
                    raise StoreConflictError(TWO_ACTIVE) from None
                if cursor.rowcount == 1:
                    continue
                if conn.execute("SELECT 1 FROM signing_keys WHERE kid = ?", (move.kid,)).fetchone() is None:
                    raise StoreConflictError(unknown_kid(move.kid))
                raise CompareFailed
            for key in change.adds:
                _insert(conn, key)
            bump(conn, KEYRING)
    except CompareFailed:
        return False
    return True


def _insert(conn: sqlite3.Connection, key: KeyRecord) -> None:
    try:
        conn.execute(
            f"INSERT INTO signing_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
            (
                key.kid,
                key.algorithm,
                key.state.value,
                key.wrapped_key,
                key.kek_id,
                key.public_jwk,
                to_micros(key.created_at),
                to_micros(key.activated_at),
                to_micros(key.retiring_at),
                to_micros(key.retired_at),
            ),
        )
    except sqlite3.IntegrityError as exc:
        if "signing_keys.kid" in str(exc):
            raise StoreConflictError(duplicate_kid(key.kid)) from None
        raise StoreConflictError(TWO_ACTIVE) from None
