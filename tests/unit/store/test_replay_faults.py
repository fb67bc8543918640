"""The replay cache fails closed: when the store cannot record (a lock held too long, a closed store, a server
that is down or does not answer) ``add`` raises ReplayCacheUnavailable, never answers True, and records nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from broker.errors import StoreUnavailableError
from broker.oauth.replay import ReplayCacheUnavailable, ReplayKind, replay_key
from broker.store import StoreUrl
from broker.store.postgres import PgOptions, PostgresStore
from broker.store.postgres._pool import connection
from broker.store.sqlite import SqliteStore
from tests.postgres import PostgresCluster
from tests.unit.store.helpers import T0

KEY = replay_key(ReplayKind.DPOP_PROOF, "thumbprint", "proof-1")
LATER = T0 + timedelta(minutes=1)


async def add(store: SqliteStore | PostgresStore) -> bool:
    return await store.replay.add(KEY, now=T0, expires_at=LATER)


@pytest.fixture
def own_cluster(postgres_cluster: PostgresCluster) -> Iterator[PostgresCluster]:
    """A cluster this test may stop (the session one stays up for the others)."""
    cluster = PostgresCluster(postgres_cluster.bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def test_sqlite_a_write_lock_held_past_busy_timeout_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("broker.store.sqlite._open.BUSY_TIMEOUT_S", 0.2)
    store = await SqliteStore.open(tmp_path / "broker.db")
    blocker = sqlite3.connect(tmp_path / "broker.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(ReplayCacheUnavailable, match="replay cache unavailable") as caught:
            await add(store)
        assert isinstance(caught.value, StoreUnavailableError) and caught.value.status == 503
        assert KEY not in str(caught.value)
        blocker.execute("ROLLBACK")
        assert await add(store)  # nothing had been recorded
    finally:
        blocker.close()
        await store.close()


async def test_sqlite_a_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "broker.db")
    await store.close()
    with pytest.raises(ReplayCacheUnavailable):
        await add(store)


async def test_postgres_a_row_lock_held_past_lock_timeout_is_unavailable(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    """Another replica's add of the same key has not committed: this one cannot know, so it refuses."""
    store = await PostgresStore.open(StoreUrl.parse(postgres_url), options=PgOptions(lock_timeout_ms=200))
    dbname = postgres_url.split("/")[3].split("?")[0]
    blocker = await psycopg.AsyncConnection.connect(postgres_cluster.conninfo(dbname))
    try:
        await blocker.execute("INSERT INTO replay_cache (key, expires_at) VALUES (%s, %s)", (KEY, LATER))
        with pytest.raises(ReplayCacheUnavailable):
            await asyncio.wait_for(add(store), 10)
        await blocker.rollback()
        assert await add(store)
    finally:
        await blocker.close()
        await store.close()


async def test_postgres_a_hung_server_is_unavailable_by_the_client_bound(postgres_url: str) -> None:
    options = PgOptions(min_size=1, max_size=1, op_timeout_s=1.0, statement_timeout_ms=60_000)
    store = await PostgresStore.open(StoreUrl.parse(postgres_url), options=options)
    try:
        async with connection(store._pool, "test") as conn:
            row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
        assert row is not None
        os.kill(int(row[0]), signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(ReplayCacheUnavailable, match="did not record it"):
                await asyncio.wait_for(add(store), 10)
            assert time.monotonic() - started < 4
        finally:
            os.kill(int(row[0]), signal.SIGCONT)
    finally:
        await asyncio.wait_for(store.close(), 30)


async def test_postgres_a_server_that_is_down_is_unavailable_then_recovers(own_cluster: PostgresCluster) -> None:
    url = StoreUrl.parse(own_cluster.url("postgres"))
    store = await PostgresStore.open(url, options=PgOptions(pool_timeout_s=1.0, connect_timeout_s=1))
    try:
        await asyncio.to_thread(own_cluster.pause)
        started = time.monotonic()
        with pytest.raises(ReplayCacheUnavailable):
            await add(store)
        assert time.monotonic() - started < 5
        await asyncio.to_thread(own_cluster.resume)
        deadline = time.monotonic() + 15
        while True:
            try:
                assert await add(store)  # the key was never recorded during the outage
                break
            except ReplayCacheUnavailable:
                assert time.monotonic() < deadline, "the pool did not reconnect"
                await asyncio.sleep(0.1)
        assert not await add(store)
    finally:
        await store.close()
