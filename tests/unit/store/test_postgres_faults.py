"""PostgreSQL store faults: unreachable, wrong password, newer schema; the password never shows."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import psycopg
import pytest

from broker.errors import StoreCorruptError, StoreSchemaError, StoreUnavailableError
from broker.store import StoreUrl, open_store
from broker.store.postgres import PgOptions, PostgresStore
from tests.postgres import PostgresCluster
from tests.unit.store.helpers import T0

FAST = PgOptions(start_timeout_s=1.0, connect_timeout_s=1)


async def test_unreachable_server_is_a_bounded_clear_error(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-not-to-log\n")
    url = StoreUrl.parse(f"postgresql://broker@/db?host={tmp_path}/nowhere&password_file={secret}")
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=r"cannot reach the PostgreSQL store .* within 1 s") as caught:
        await PostgresStore.open(url, options=FAST)
    assert time.monotonic() - started < 10
    assert caught.value.error == "temporarily_unavailable"
    assert "s3cret" not in str(caught.value)


async def test_wrong_password_is_refused_and_never_logged(
    postgres_cluster: PostgresCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = tmp_path / "pw"
    wrong.write_text("wrong-password-xyz\n")
    url = StoreUrl.parse(f"postgresql://broker@/postgres?host={postgres_cluster.socket_dir}&password_file={wrong}")
    with pytest.raises(StoreUnavailableError, match="check the host, the database name, the user and the password"):
        await PostgresStore.open(url, options=FAST)
    assert "wrong-password-xyz" not in caplog.text


async def test_password_in_the_url_is_redacted(postgres_cluster: PostgresCluster) -> None:
    url = StoreUrl.parse(
        f"postgresql://broker:{postgres_cluster.password}@/postgres?host={postgres_cluster.socket_dir}"
    )
    assert postgres_cluster.password not in url.redacted() and postgres_cluster.password not in repr(url)
    store = await PostgresStore.open(url)
    await store.close()


def raw(cluster: PostgresCluster, url: str, statement: str) -> list[tuple[object, ...]]:
    dbname = url.split("/")[3].split("?")[0]
    with psycopg.connect(cluster.conninfo(dbname), autocommit=True) as conn:
        cursor = conn.execute(statement.encode())
        return cursor.fetchall() if cursor.description else []


async def test_newer_schema_is_refused_and_unchanged(postgres_cluster: PostgresCluster, postgres_url: str) -> None:
    store = await open_store(postgres_url)
    await store.close()
    raw(postgres_cluster, postgres_url, "INSERT INTO broker_schema (version, name) VALUES (99, 'from_the_future')")
    before = raw(postgres_cluster, postgres_url, "SELECT version, name FROM broker_schema ORDER BY version")
    with pytest.raises(StoreSchemaError, match="schema version 99, newer than this spiffe-broker knows"):
        await open_store(postgres_url)
    assert raw(postgres_cluster, postgres_url, "SELECT version, name FROM broker_schema ORDER BY version") == before


async def test_without_migrate_an_empty_database_is_refused_and_unchanged(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    with pytest.raises(StoreSchemaError, match="run `spiffe-broker store migrate`"):
        await open_store(postgres_url, migrate=False)
    tables = raw(postgres_cluster, postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert tables == []


async def test_journal_is_append_only_in_the_database(postgres_cluster: PostgresCluster, postgres_url: str) -> None:
    store = await open_store(postgres_url)
    await store.audit.append("e", T0, b"{}")
    await store.close()
    for statement in ("UPDATE audit_records SET body = ''", "DELETE FROM audit_records", "TRUNCATE audit_records"):
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            raw(postgres_cluster, postgres_url, statement)


async def test_replicas_starting_at_once_migrate_once(postgres_cluster: PostgresCluster, postgres_url: str) -> None:
    stores = await asyncio.gather(*(open_store(postgres_url) for _ in range(5)))
    for store in stores:
        await store.close()
    rows = raw(postgres_cluster, postgres_url, "SELECT version FROM broker_schema ORDER BY version")
    assert rows == [(v,) for v in range(1, PostgresStore.latest_version() + 1)]


async def test_another_programs_database_is_refused_and_unchanged(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    raw(postgres_cluster, postgres_url, "CREATE TABLE realm (id text PRIMARY KEY)")  # e.g. Keycloak's
    with pytest.raises(StoreCorruptError, match="another program's database"):
        await open_store(postgres_url)
    tables = raw(postgres_cluster, postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert tables == [("realm",)]
