"""Migrations: numbered alike on every engine; replicas starting at once apply each one once."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from broker.errors import StoreSchemaError
from broker.store import latest_version, open_store
from broker.store.migrations import check_version, load


def test_engines_have_the_same_numbered_migrations() -> None:
    sqlite_names = [(m.version, m.name) for m in load("broker.store.sqlite.migrations")]
    postgres_names = [(m.version, m.name) for m in load("broker.store.postgres.migrations")]
    assert sqlite_names == postgres_names
    assert len(sqlite_names) == latest_version() >= 1


async def test_sqlite_replicas_starting_at_once_migrate_once(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/broker.db"
    stores = await asyncio.gather(*(open_store(url) for _ in range(5)))
    for store in stores:
        assert await store.schema_version() == latest_version()
        await store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "broker.db")) as conn:
        rows = conn.execute("SELECT version FROM broker_schema").fetchall()
    assert rows == [(v,) for v in range(1, latest_version() + 1)]


@pytest.mark.parametrize(
    ("current", "migrate", "message"),
    [(3, True, "newer than this spiffe-broker"), (0, False, "store migrate"), (1, False, "store migrate")],
    ids=["newer", "empty-no-migrate", "older-no-migrate"],
)
def test_check_version_refuses(current: int, migrate: bool, message: str) -> None:
    with pytest.raises(StoreSchemaError, match=message):
        check_version(current, 2, store="s", migrate=migrate)


def test_check_version_accepts_current_and_migratable() -> None:
    check_version(2, 2, store="s", migrate=False)
    check_version(0, 2, store="s", migrate=True)
