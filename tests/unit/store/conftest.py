"""Fixtures for the store contract suite: every test runs against memory, SQLite and a real PostgreSQL.

``postgres_cluster`` is session-scoped (one ``initdb`` per run); each test gets a fresh database in it. Without
PostgreSQL binaries it fails, naming how to install them (a test never passes by skipping what it tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from broker.store import Store, latest_version, open_store
from broker.store.memory import MemoryStore
from tests.postgres import PostgresCluster, running_cluster

OpenReplica = Callable[[], Awaitable[Store]]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    return postgres_cluster.url(postgres_cluster.create_database())


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def open_replica(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenReplica]:
    """Opens another handle (a "replica") on one store; every handle is closed at the end of the test."""
    opened: list[Store] = []
    if request.param == "memory":
        twin = MemoryStore(latest_version())

        async def open_memory() -> Store:
            return twin

        yield open_memory
        return
    url = f"sqlite://{tmp_path}/state/broker.db"
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")

    async def open_real() -> Store:
        store = await open_store(url)
        opened.append(store)
        return store

    try:
        yield open_real
    finally:
        for store in opened:
            await store.close()


@pytest.fixture
async def store(open_replica: OpenReplica) -> Store:
    return await open_replica()
