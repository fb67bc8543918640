"""SQLite store faults: a corrupt, foreign, exposed or newer file is refused by name and left as it was."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.errors import StoreCorruptError, StoreError, StoreSchemaError, StoreUnavailableError
from broker.store import open_store
from broker.store.sqlite import SqliteStore
from broker.store.sqlite._open import _durable
from broker.store.sqlite._worker import immediate
from tests.unit.store.helpers import T0


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def snapshot(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def write_foreign(path: Path, application_id: int = 0) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)")
    conn.execute(f"PRAGMA application_id = {application_id}")
    conn.commit()
    conn.close()
    path.chmod(0o600)


async def make_store(path: Path) -> None:
    store = await SqliteStore.open(path)
    await store.audit.append("store.created", T0, b"{}")
    await store.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    (tmp_path / "state").mkdir(mode=0o700)
    return tmp_path / "state" / "broker.db"


async def test_new_file_and_wal_are_private(db: Path) -> None:
    store = await SqliteStore.open(db)
    try:
        await store.audit.append("e", T0, b"{}")
        assert mode(db) == 0o600
        assert mode(f"{db}-wal") == 0o600
        assert mode(db.parent) == 0o700
        with contextlib.closing(sqlite3.connect(db)) as reader:
            assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert await store.schema_version() == SqliteStore.latest_version()
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_bytes(b"this is not a database, it is a text file\n" * 100), "not a SQLite database"),
        (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4080), "not a SQLite database"),
        (write_foreign, "another program's SQLite database"),
        (lambda p: write_foreign(p, 0x12345678), "application_id 0x12345678"),
    ],
    ids=["text-file", "damaged-header", "foreign-tables", "foreign-application-id"],
)
async def test_corrupt_or_foreign_file_is_refused_and_unchanged(db: Path, write: object, message: str) -> None:
    assert callable(write)
    write(db)
    os.chmod(db, 0o600)
    before = snapshot(db.parent)
    with pytest.raises(StoreCorruptError, match=message) as caught:
        await open_store(f"sqlite://{db}")
    assert "--store" in str(caught.value) and "nothing was changed" in str(caught.value)
    assert snapshot(db.parent) == before


async def test_newer_schema_is_refused_and_unchanged(db: Path) -> None:
    await make_store(db)
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO broker_schema VALUES (99, 'from_the_future', 0)")
    conn.commit()
    conn.close()
    before = snapshot(db.parent)
    with pytest.raises(StoreSchemaError, match="schema version 99, newer than this spiffe-broker knows") as caught:
        await open_store(f"sqlite://{db}")
    assert "upgrade spiffe-broker" in str(caught.value)
    assert snapshot(db.parent) == before


async def test_edited_migration_history_is_refused(db: Path) -> None:
    await make_store(db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE broker_schema SET name = 'something_else' WHERE version = 1")
    conn.commit()
    conn.close()
    before = snapshot(db.parent)
    with pytest.raises(StoreCorruptError, match="records migration 1 as 'something_else'"):
        await open_store(f"sqlite://{db}")
    assert snapshot(db.parent) == before


@pytest.mark.parametrize(
    ("kind", "body"),
    [("token.revoked", '{"jti":"j1"}'), ("key.revoked", "not json"), ("subject.released", '{"pattern":"x","at":0}')],
    ids=["missing-field", "not-json", "bad-pattern"],
)
async def test_a_revocation_entry_this_broker_did_not_write_is_refused_by_seq(db: Path, kind: str, body: str) -> None:
    await make_store(db)
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE revocation_meta SET head = 1")
        conn.execute("INSERT INTO revocation_log (seq, kind, target, body, created_at) VALUES (1, ?, 't', ?, 0)",
                     (kind, body))  # fmt: skip
    store = await SqliteStore.open(db)
    try:
        with pytest.raises(StoreCorruptError, match="revocation log entry 1 is not one this spiffe-broker wrote"):
            await store.revocations.read(0)
    finally:
        await store.close()


async def test_without_migrate_a_missing_store_is_refused_and_not_created(db: Path) -> None:
    with pytest.raises(StoreSchemaError, match="run `spiffe-broker store migrate`"):
        await open_store(f"sqlite://{db}", migrate=False)
    assert db.name not in os.listdir(db.parent)


async def test_file_readable_by_others_is_refused(db: Path) -> None:
    await make_store(db)
    os.chmod(db, 0o644)
    with pytest.raises(StoreError, match="mode 0644, readable by others: chmod 600"):
        await open_store(f"sqlite://{db}")


async def test_reopen_keeps_records_and_version(db: Path) -> None:
    await make_store(db)
    store = await SqliteStore.open(db, migrate=False)
    try:
        assert [r.event for r in await store.audit.read()] == ["store.created"]
    finally:
        await store.close()


async def test_journal_is_append_only_in_the_database(db: Path) -> None:
    await make_store(db)
    conn = sqlite3.connect(db)
    for statement in ("UPDATE audit_records SET body = x'00'", "DELETE FROM audit_records"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(statement)
    conn.close()


async def test_closed_store_refuses_calls(db: Path) -> None:
    store = await SqliteStore.open(db)
    await store.close()
    with pytest.raises(StoreError, match="is closed"):
        await store.audit.last()
    await store.close()  # twice is fine


async def test_a_locked_file_waits_off_the_event_loop(db: Path) -> None:
    store = await SqliteStore.open(db)
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        append = asyncio.create_task(store.audit.append("e", T0, b"{}"))
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not append.done()  # the loop ran while the worker waited on the lock
        blocker.execute("COMMIT")
        assert (await append).seq == 1
    finally:
        blocker.close()
        await store.close()


async def test_a_lock_held_past_busy_timeout_is_unavailable(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("broker.store.sqlite._open.BUSY_TIMEOUT_S", 0.2)
    store = await SqliteStore.open(db)
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailableError, match="busy"):
            await store.audit.append("e", T0, b"{}")
        blocker.execute("ROLLBACK")
        assert (await store.audit.append("e", T0, b"{}")).seq == 1
    finally:
        blocker.close()
        await store.close()


async def test_the_open_store_runs_wal_with_synchronous_full(db: Path) -> None:
    store = await SqliteStore.open(db)
    try:
        conn = store._worker.conn
        assert conn is not None
        journal, synchronous = await store._worker.call(
            lambda: (
                conn.execute("PRAGMA journal_mode").fetchone()[0],
                conn.execute("PRAGMA synchronous").fetchone()[0],
            )
        )
        assert (journal, synchronous) == ("wal", 2)
    finally:
        await store.close()


def test_a_journal_mode_sqlite_did_not_take_is_refused() -> None:
    # An in-memory database keeps journal_mode=memory whatever is asked.
    with (
        contextlib.closing(sqlite3.connect(":memory:", isolation_level=None)) as conn,
        pytest.raises(StoreError, match="cannot use the WAL journal"),
    ):
        _durable(conn, "sqlite://:memory:")


@contextlib.contextmanager
def deferred_fk(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(sqlite3.connect(tmp_path / "fk.db", isolation_level=None)) as conn:
        _deferred_fk_schema(conn)
        yield conn


def _deferred_fk_schema(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute(
        "CREATE TABLE child (id INTEGER PRIMARY KEY, "
        "parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
    )


def test_a_failing_commit_is_rolled_back(tmp_path: Path) -> None:
    with deferred_fk(tmp_path) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), immediate(conn):
            conn.execute("INSERT INTO child (id, parent) VALUES (1, 42)")  # checked only at COMMIT
        assert not conn.in_transaction
        assert conn.execute("SELECT count(*) FROM child").fetchone()[0] == 0


def test_an_error_after_sqlite_ended_the_transaction_is_not_hidden(tmp_path: Path) -> None:
    with deferred_fk(tmp_path) as conn:
        with pytest.raises(ValueError, match="the first error"), immediate(conn):
            conn.execute("ROLLBACK")  # as SQLite does itself on some errors (SQLITE_FULL, SQLITE_IOERR)
            raise ValueError("the first error")
        assert not conn.in_transaction
