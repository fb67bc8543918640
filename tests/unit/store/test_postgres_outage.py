"""PostgreSQL going away mid-run: calls fail fast with StoreUnavailableError (503), and recover by themselves."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

from broker.errors import StoreUnavailableError
from broker.store import StoreUrl
from broker.store.postgres import PgOptions, PostgresStore
from broker.store.postgres._pool import connection
from tests.postgres import PostgresCluster
from tests.unit.store.helpers import T0

RECOVERY_S = 15.0


@pytest.fixture
def own_cluster(postgres_cluster: PostgresCluster) -> Iterator[PostgresCluster]:
    """A second cluster this test may stop and start (the session one stays up for the others)."""
    cluster = PostgresCluster(postgres_cluster.bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def test_outage_is_unavailable_then_recovers(own_cluster: PostgresCluster) -> None:
    url = StoreUrl.parse(own_cluster.url("postgres"))
    store = await PostgresStore.open(url, options=PgOptions(pool_timeout_s=1.0, connect_timeout_s=1))
    try:
        await store.audit.append("before", T0, b"{}")
        await asyncio.to_thread(own_cluster.pause)
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as caught:
            await store.audit.append("during", T0, b"{}")
        assert time.monotonic() - started < 5
        assert caught.value.status == 503
        await asyncio.to_thread(own_cluster.resume)
        deadline = time.monotonic() + RECOVERY_S
        while True:
            try:
                record = await store.audit.append("after", T0, b"{}")
                break
            except StoreUnavailableError:
                assert time.monotonic() < deadline, "the pool did not reconnect"
                await asyncio.sleep(0.1)
        assert [r.event for r in await store.audit.read()] == ["before", "after"]
        assert record.seq == 2
    finally:
        await store.close()


async def test_statement_timeout_is_unavailable(postgres_url: str) -> None:
    store = await PostgresStore.open(StoreUrl.parse(postgres_url), options=PgOptions(statement_timeout_ms=100))
    try:
        with pytest.raises(StoreUnavailableError, match="statement timeout"):
            async with connection(store._pool, "test") as conn:
                await conn.execute("SELECT pg_sleep(2)")
    finally:
        await store.close()


async def test_a_hung_server_cannot_hold_a_call_past_the_client_bound(postgres_url: str) -> None:
    """SIGSTOP the backend serving the pool's only connection: the call fails by the client-side bound."""
    options = PgOptions(min_size=1, max_size=1, op_timeout_s=1.0, statement_timeout_ms=60_000)
    store = await PostgresStore.open(StoreUrl.parse(postgres_url), options=options)
    try:
        async with connection(store._pool, "test") as conn:
            row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
        assert row is not None
        backend = int(row[0])
        os.kill(backend, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError, match="did not answer within 1 s"):
                await asyncio.wait_for(store.audit.append("hung", T0, b"{}"), 10)
            assert time.monotonic() - started < 4
        finally:
            os.kill(backend, signal.SIGCONT)
    finally:
        await asyncio.wait_for(store.close(), 30)
