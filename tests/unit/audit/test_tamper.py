"""``audit verify`` against an attacker with write access to the database: a real SQLite file, a real PostgreSQL
table. The attacker drops the append-only triggers first, then changes, deletes, inserts or reorders records."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from broker.audit.journal import chain_hash, epoch_micros
from broker.audit.verify import BreakKind, Head, verify_journal
from broker.store import Store, open_store
from tests.postgres import PostgresCluster
from tests.unit.store.helpers import T0

Execute = Callable[[str, tuple[object, ...]], None]
SHIFT = 1000  # renumbering goes through seq + SHIFT: seq is the primary key


@dataclass
class Attacker:
    """Runs SQL on the store's database behind the broker's back (``?`` placeholders on both engines)."""

    engine: str
    execute: Execute

    def __call__(self, sql: str, *params: object) -> None:
        self.execute(sql, params)

    def at(self, seq: int) -> object:
        """``at`` of record ``seq`` as this engine stores it."""
        instant = T0 + timedelta(seconds=seq)
        return epoch_micros(instant) if self.engine == "sqlite" else instant

    def renumber(self, first: int, by: int) -> None:
        self("UPDATE audit_records SET seq = seq + ? WHERE seq >= ?", SHIFT, first)
        self("UPDATE audit_records SET seq = seq - ? WHERE seq >= ?", SHIFT - by, SHIFT + first)


@pytest.fixture(params=["sqlite", "postgres"])
async def journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Store, Attacker]]:
    """A store with ten records, and an attacker who has already dropped the append-only triggers."""
    if request.param == "sqlite":
        path = tmp_path / "state" / "broker.db"
        store = await open_store(f"sqlite://{path}")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("DROP TRIGGER audit_records_no_update")
        conn.execute("DROP TRIGGER audit_records_no_delete")

        def on_sqlite(sql: str, params: tuple[object, ...]) -> None:
            conn.execute(sql, params)

        attacker = Attacker("sqlite", on_sqlite)
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        name = cluster.create_database()
        store = await open_store(cluster.url(name))
        pg = psycopg.connect(cluster.conninfo(name), autocommit=True)
        pg.execute("DROP TRIGGER audit_records_no_change ON audit_records")
        pg.execute("DROP TRIGGER audit_records_no_truncate ON audit_records")

        def on_postgres(sql: str, params: tuple[object, ...]) -> None:
            pg.execute(sql.replace("?", "%s").encode(), params)

        attacker = Attacker("postgres", on_postgres)
    await store.audit.append_many([("e", T0 + timedelta(seconds=i), f'{{"i":{i}}}'.encode()) for i in range(1, 11)])
    try:
        yield store, attacker
    finally:
        await store.close()
        (conn if request.param == "sqlite" else pg).close()


async def verdict(store: Store, expect_head: Head | None = None) -> tuple[int, BreakKind] | None:
    report = await verify_journal(store.audit, expect_head=expect_head)
    return None if report.first_break is None else (report.first_break.seq, report.first_break.kind)


async def test_an_untouched_journal_verifies(journal: tuple[Store, Attacker]) -> None:
    store, _ = journal
    assert await verdict(store) is None


async def test_a_changed_body_is_named(journal: tuple[Store, Attacker]) -> None:
    store, attacker = journal
    attacker("UPDATE audit_records SET body = ? WHERE seq = 4", b'{"i":999}')
    assert await verdict(store) == (4, BreakKind.CHANGED)


async def test_a_changed_and_rehashed_record_is_named(journal: tuple[Store, Attacker]) -> None:
    store, attacker = journal
    (record,) = await store.audit.read(4, 1)
    forged = chain_hash(record.prev_hash, 4, record.at, record.event, b'{"i":999}')
    attacker("UPDATE audit_records SET body = ?, hash = ? WHERE seq = 4", b'{"i":999}', forged)
    assert await verdict(store) == (4, BreakKind.CHANGED)


async def test_a_deleted_record_is_named(journal: tuple[Store, Attacker]) -> None:
    store, attacker = journal
    attacker("DELETE FROM audit_records WHERE seq = 4")
    assert await verdict(store) == (4, BreakKind.DELETED)


async def test_a_deleted_record_is_named_after_the_gap_is_closed(journal: tuple[Store, Attacker]) -> None:
    store, attacker = journal
    attacker("DELETE FROM audit_records WHERE seq = 4")
    attacker.renumber(5, by=-1)
    assert [r.seq for r in await store.audit.read()] == list(range(1, 10))
    assert await verdict(store) == (4, BreakKind.DELETED)


async def test_an_inserted_record_is_named(journal: tuple[Store, Attacker]) -> None:
    store, attacker = journal
    (before,) = await store.audit.read(4, 1)
    attacker.renumber(5, by=1)
    body = b'{"forged":true}'
    forged = chain_hash(before.hash, 5, before.at, "e", body)  # well formed: it links to record 4
    attacker("INSERT INTO audit_records VALUES (?, ?, ?, ?, ?, ?)", 5, attacker.at(4), "e", body, before.hash, forged)
    assert await verdict(store) == (5, BreakKind.INSERTED)


async def test_two_swapped_records_are_named_as_reordered(journal: tuple[Store, Attacker]) -> None:
    store, attacker = journal
    attacker("UPDATE audit_records SET seq = ? WHERE seq = 4", SHIFT)
    attacker("UPDATE audit_records SET seq = 4 WHERE seq = 5")
    attacker("UPDATE audit_records SET seq = 5 WHERE seq = ?", SHIFT)
    assert await verdict(store) == (4, BreakKind.REORDERED)


async def test_swapped_contents_are_named_as_reordered(journal: tuple[Store, Attacker]) -> None:
    store, attacker = journal
    four, five = await store.audit.read(4, 2)
    attacker("UPDATE audit_records SET body = ?, at = ? WHERE seq = 4", five.body, attacker.at(5))
    attacker("UPDATE audit_records SET body = ?, at = ? WHERE seq = 5", four.body, attacker.at(4))
    assert await verdict(store) == (4, BreakKind.REORDERED)


async def test_a_deleted_tail_is_caught_only_with_the_recorded_head(journal: tuple[Store, Attacker]) -> None:
    store, attacker = journal
    head = (await verify_journal(store.audit)).head
    assert head is not None and head.seq == 10
    attacker("DELETE FROM audit_records WHERE seq > 8")
    assert await verdict(store) is None  # a hash chain alone cannot see it
    assert await verdict(store, expect_head=head) == (10, BreakKind.TRUNCATED)
