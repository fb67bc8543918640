"""Open a SQLite store file: refuse what is not ours (changing nothing), then WAL, durable commits, migrations.

Order matters, so that a refused file is left byte for byte as it was:

1. The file is created 0600 (``O_CREAT | O_EXCL``) in a 0700 directory if it is missing; an existing file that
   others can read is refused. SQLite creates ``-wal`` and ``-shm`` with the database file's mode.
2. Read-only checks: the header (``PRAGMA application_id``, SQLite "Database File Format" §1.3.13) is the
   broker's or zero with no tables; ``broker_schema`` names this broker's migrations; the version is not newer.
3. ``journal_mode=WAL`` (readers never block the writer) and ``synchronous=FULL``: in WAL mode, FULL makes each
   commit durable across power loss; NORMAL may lose the last commits (SQLite "PRAGMA synchronous").
4. ``BEGIN IMMEDIATE``: re-read the version under the write lock, apply what is missing, record it, commit.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

from broker._files import private_dir
from broker.errors import StoreCorruptError, StoreError
from broker.store.migrations import Migration, check_history, check_version, load
from broker.store.sqlite._worker import immediate

__all__ = ["APPLICATION_ID", "MIGRATIONS", "open_connection"]

APPLICATION_ID = 0x53504B42  # "SPKB": marks the file as a spiffe-broker store (SQLite "PRAGMA application_id")
MIGRATIONS: tuple[Migration, ...] = load("broker.store.sqlite.migrations")
BUSY_TIMEOUT_S = 5.0

_SCHEMA_TABLE = """CREATE TABLE IF NOT EXISTS broker_schema (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL
) STRICT"""


def open_connection(path: Path, *, migrate: bool) -> tuple[sqlite3.Connection, int | None]:
    """A checked, migrated connection to ``path`` (run on the worker thread), and the schema version this open
    migrated from (None: nothing applied, as when another replica migrated it first)."""
    if not migrate and not path.exists():
        check_version(0, len(MIGRATIONS), store=f"sqlite://{path}", migrate=False)  # refused: nothing is created
    _create_private(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
    try:
        store = f"sqlite://{path}"
        conn.execute("BEGIN")  # one read snapshot: another replica may be migrating this file right now
        try:
            _check_ours(conn, store, migrate=migrate)
        finally:
            conn.execute("COMMIT")
        _durable(conn, store)
        conn.execute("PRAGMA foreign_keys=ON")
        migrated_from = _migrate(conn, store, migrate=migrate)
    except BaseException:
        conn.close()
        raise
    return conn, migrated_from


SYNCHRONOUS_FULL = 2  # PRAGMA synchronous reads back as a number: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def _set_wal(conn: sqlite3.Connection) -> str:
    """``PRAGMA journal_mode=WAL``, retried while another replica holds the file's lock (switching a new file to
    WAL needs an exclusive lock, and SQLite does not always wait on the busy handler for it), up to the busy
    timeout; the journal mode SQLite reports."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)  # on the store's worker thread, never the event loop
        pause = min(pause * 2, 0.1)


def _durable(conn: sqlite3.Connection, store: str) -> None:
    """WAL and ``synchronous=FULL``, checked: SQLite answers a journal mode it cannot set with the mode it kept."""
    journal = _set_wal(conn)
    if journal != "wal":
        raise StoreError(
            f"store {store} cannot use the WAL journal (SQLite kept {journal!r}): put it on a local file system"
        )
    conn.execute("PRAGMA synchronous=FULL")
    synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    if synchronous != SYNCHRONOUS_FULL:
        raise StoreError(
            f"store {store}: PRAGMA synchronous is {synchronous}, not FULL (2); commits would not be durable"
        )


def _create_private(path: Path) -> None:
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise StoreError(f"store sqlite://{path} is not a regular file: point --store at a file") from None
        if mode & 0o077:
            raise StoreError(
                f"store sqlite://{path} has mode {stat.S_IMODE(mode):04o}, readable by others: chmod 600 it"
            ) from None


def _check_ours(conn: sqlite3.Connection, store: str, *, migrate: bool) -> None:
    application_id = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if application_id not in (0, APPLICATION_ID) or (application_id == 0 and tables):
        raise StoreCorruptError(
            f"store {store} is another program's SQLite database (application_id {application_id:#x}, "
            f"{len(tables)} tables): point --store at the broker's own file; nothing was changed"
        )
    if "broker_schema" in tables:
        applied = conn.execute("SELECT version, name FROM broker_schema ORDER BY version").fetchall()
        check_history(applied, MIGRATIONS, store=store)
        check_version(max((v for v, _ in applied), default=0), len(MIGRATIONS), store=store, migrate=migrate)
    elif not migrate:
        check_version(0, len(MIGRATIONS), store=store, migrate=False)


def _migrate(conn: sqlite3.Connection, store: str, *, migrate: bool) -> int | None:
    with immediate(conn):
        conn.execute(_SCHEMA_TABLE)
        applied = conn.execute("SELECT version, name FROM broker_schema ORDER BY version").fetchall()
        check_history(applied, MIGRATIONS, store=store)
        current = max((v for v, _ in applied), default=0)
        check_version(current, len(MIGRATIONS), store=store, migrate=migrate)
        if current == 0:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        for migration in MIGRATIONS[current:]:
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO broker_schema (version, name, applied_at) "
                "VALUES (?, ?, CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))",
                (migration.version, migration.name),
            )
        return current if current < len(MIGRATIONS) else None


def _statements(sql: str) -> list[str]:
    """``sql`` split into complete statements (``executescript`` would commit first; triggers hold ``;``)."""
    statements: list[str] = []
    pending = ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                statements.append(pending.strip())
            pending = ""
    if pending.strip() and not pending.strip().startswith("--"):
        raise RuntimeError("a migration ends in an incomplete statement")
    return statements
