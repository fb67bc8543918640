"""Revocation log appenders on several handles (replicas): sequence numbers stay gap-free in commit order, so a
follower reading ``read(after)`` in a loop sees every entry exactly once, in order."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from broker.events.revocations import TokenRevoked
from broker.store import Store, open_store
from tests.postgres import PostgresCluster
from tests.unit.store.conftest import OpenReplica
from tests.unit.store.helpers import T0

APPENDS = 60  # per appender handle, all in flight at once
FOLLOW_BOUND_S = 60.0


async def follow(store: Store, total: int, done: asyncio.Event) -> list[str]:
    """Read from seq 0 until ``total`` entries were seen; every page must continue exactly where the last ended."""
    after, jtis = 0, list[str]()
    while len(jtis) < total:
        finished = done.is_set()  # before the read: a read that started earlier may end after the last commit
        page = await store.revocations.read(after, limit=7)
        for entry in page.entries:
            assert entry.seq == after + 1, f"after {after} the follower was given {entry.seq}: a gap or a repeat"
            assert isinstance(entry.event, TokenRevoked)
            after = entry.seq
            jtis.append(entry.event.jti)
        assert page.head >= after
        if not page.entries:
            assert not finished, "every append has committed, yet entries are missing"
            await asyncio.sleep(0.001)
    return jtis


async def test_concurrent_appenders_leave_no_gap_and_a_follower_sees_every_entry_once_in_order(
    open_replica: OpenReplica,
) -> None:
    writers = [await open_replica() for _ in range(2)]
    follower = await open_replica()
    done = asyncio.Event()
    batches = {f"w{w}-{i}": 1 + i % 3 for w in range(2) for i in range(APPENDS)}  # 1 to 3 entries per append
    total = sum(batches.values())

    async def append(writer: Store, name: str) -> None:
        await writer.revocations.append([TokenRevoked(f"{name}.{n}", T0) for n in range(batches[name])])

    async def appenders() -> None:
        await asyncio.gather(*(append(writers[int(name[1])], name) for name in batches))
        done.set()

    seen, _ = await asyncio.wait_for(asyncio.gather(follow(follower, total, done), appenders()), FOLLOW_BOUND_S)
    assert sorted(seen) == sorted(f"{name}.{n}" for name, count in batches.items() for n in range(count))
    for name in batches:  # one append's entries are consecutive: one transaction
        positions = [i for i, jti in enumerate(seen) if jti.startswith(name + ".")]
        assert positions == list(range(positions[0], positions[0] + batches[name]))
    assert (await writers[0].revocations.read(total)).head == total


# Another writer holds the write lock in the middle of an append: ours waits, and numbers after it (or takes its
# numbers if it rolls back). Meanwhile a reader on another handle sees only what was committed.


@dataclass
class Held:
    """Two handles on one store, and a raw transaction on it that took the head lock and wrote seq 1."""

    writer: Store
    reader: Store
    end: Callable[[bool], Awaitable[None]]  # commit (True) or roll back (False) the raw transaction


_ROW = "(1, 'token.revoked', 'x', '{\"jti\":\"x\",\"exp\":0}', 0, 0)"


@pytest.fixture(params=["sqlite", "postgres"])
async def held(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Held]:
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path}/state/broker.db"
        stores = [await open_store(url) for _ in range(2)]
        raw = sqlite3.connect(tmp_path / "state" / "broker.db", isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("UPDATE revocation_meta SET head = head + 1")
        raw.execute(f"INSERT INTO revocation_log (seq, kind, target, body, kept_until, created_at) VALUES {_ROW}")

        async def end_sqlite(commit: bool) -> None:
            raw.execute("COMMIT" if commit else "ROLLBACK")

        try:
            yield Held(stores[0], stores[1], end_sqlite)
        finally:
            raw.close()  # rolls back what is still open
            for store in stores:
                await store.close()
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    name = cluster.create_database()
    stores = [await open_store(cluster.url(name)) for _ in range(2)]
    conn = await psycopg.AsyncConnection.connect(cluster.conninfo(name))
    await conn.execute("UPDATE revocation_meta SET head = head + 1")  # psycopg opened a transaction
    row = _ROW.replace(", 0, 0)", ", 'epoch', 'epoch')")
    await conn.execute(f"INSERT INTO revocation_log (seq, kind, target, body, kept_until, created_at) VALUES {row}")

    async def end_postgres(commit: bool) -> None:
        await (conn.commit() if commit else conn.rollback())

    try:
        yield Held(stores[0], stores[1], end_postgres)
    finally:
        await conn.close()
        for store in stores:
            await store.close()


@pytest.mark.parametrize(("commit", "seq"), [(True, 2), (False, 1)], ids=["other-commits", "other-rolls-back"])
async def test_an_append_waits_for_the_one_in_flight_and_numbers_after_what_it_committed(
    held: Held, commit: bool, seq: int
) -> None:
    appending = asyncio.create_task(held.writer.revocations.append([TokenRevoked("mine", T0)]))
    await asyncio.sleep(0.3)
    assert not appending.done()
    page = await held.reader.revocations.read(0)
    assert (page.entries, page.head) == ((), 0)  # nothing committed yet
    await held.end(commit)
    (entry,) = await asyncio.wait_for(appending, 5)
    assert entry.seq == seq
    assert [e.seq for e in (await held.reader.revocations.read(0)).entries] == list(range(1, seq + 1))
