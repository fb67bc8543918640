"""Migrations: numbered alike on every engine; replicas starting at once apply each one once; a store made by an
older broker is migrated in place, its data kept."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import psycopg
import pytest

from broker.errors import StoreSchemaError
from broker.events.revocations import (
    ExceptionWithdrawn,
    RevocationEvent,
    SubjectPattern,
    SubjectQuarantined,
    TokenRevoked,
)
from broker.events.topics import APIKEYS, REVOCATIONS
from broker.store import latest_version, open_store
from broker.store.migrations import check_version, load
from broker.store.postgres import _pool as postgres_pool
from broker.store.sqlite import _open as sqlite_open
from tests.postgres import PostgresCluster
from tests.unit.store.helpers import T0
from tests.unit.store.test_ledger_contract import entry

TEAM = SubjectPattern.parse("spiffe://example.org/team/*")
HOUR = timedelta(hours=1)


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


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_a_version_2_store_is_migrated_to_the_revocation_log_keeping_its_ledger_and_counters(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    module: ModuleType = sqlite_open
    url = f"sqlite://{tmp_path}/state/broker.db"
    if engine == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        url, module = cluster.url(cluster.create_database()), postgres_pool
    with monkeypatch.context() as patched:
        patched.setattr(module, "MIGRATIONS", module.MIGRATIONS[:2])  # the broker of issue 9
        old = await open_store(url)
        assert await old.schema_version() == 2
        await old.ledger.record([entry("j1", sub="team/web"), entry("j2", sub="team/db"), entry("j3", sub="other")])
        assert await old.changes.publish(REVOCATIONS) == 1  # a topic may be published before its table exists
        await old.close()
    store = await open_store(url)
    try:
        assert (await store.schema_version(), store.migrated_from) == (latest_version(), 2)
        live = await store.ledger.live_tokens(SubjectPattern.parse("spiffe://example.org/team/*"), T0)
        assert sorted(jti for jti, _ in live) == ["j1", "j2"]
        page = await store.revocations.read(0)
        assert (page.entries, page.head, page.horizon) == ((), 0, 0)
        (appended,) = await store.revocations.append([TokenRevoked("j1", T0)])
        assert appended.seq == 1
        assert await store.changes.publish(REVOCATIONS) == 3  # 1, the append's bump, this one: not reset to 0
    finally:
        await store.close()


def _schema_facts(engine: str, target: str) -> tuple[set[str], bool]:
    """The revocation log's index names, and whether it still refuses an unknown kind (its CHECK)."""
    if engine == "sqlite":
        with contextlib.closing(sqlite3.connect(target)) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'revocation_log'")
            indexes = {str(name) for (name,) in rows}
            try:
                conn.execute("INSERT INTO revocation_log VALUES (99, 'bogus', 't', '{}', NULL, NULL, 0)")
            except sqlite3.IntegrityError:
                return indexes, True
            return indexes, False
    with psycopg.connect(target, autocommit=True) as pg:
        found = pg.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'revocation_log'").fetchall()
        indexes = {str(name) for (name,) in found}
        try:
            pg.execute("INSERT INTO revocation_log VALUES (99, 'bogus', 't', '{}', NULL, NULL, now())")
        except psycopg.errors.CheckViolation:
            return indexes, True
        return indexes, False


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_a_version_4_store_gains_api_key_exceptions_and_keeps_its_revocation_log(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    module: ModuleType = sqlite_open
    target = f"{tmp_path}/state/broker.db"
    url = f"sqlite://{target}"
    if engine == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        name = cluster.create_database()
        url, target, module = cluster.url(name), cluster.conninfo(name), postgres_pool
    entries: list[RevocationEvent] = [
        TokenRevoked("j1", T0),
        SubjectQuarantined(TEAM, T0, None, T0 + HOUR, "incident 7"),
    ]
    with monkeypatch.context() as patched:
        patched.setattr(module, "MIGRATIONS", module.MIGRATIONS[:4])  # the broker of issue 11
        old = await open_store(url)
        assert await old.schema_version() == 4
        appended = await old.revocations.append(entries)
        await old.close()
    store = await open_store(url)
    try:
        assert (await store.schema_version(), store.migrated_from) == (latest_version(), 4)
        assert (await store.revocations.read(0)).entries == appended
        (withdrawal,) = await store.revocations.append([ExceptionWithdrawn("stripe", T0, T0 + HOUR)])
        assert withdrawal.seq == 3 and (await store.revocations.read(2)).entries == (withdrawal,)
        assert await store.changes.publish(APIKEYS) == 1  # the topic's counter starts at 0
        assert await store.apikeys.list_all() == ()
    finally:
        await store.close()
    indexes, checked = _schema_facts(engine, target)
    assert {"revocation_log_by_kept_until", "revocation_log_quarantines"} <= indexes
    assert checked, "the rebuilt revocation_log lost its CHECK on kind"
