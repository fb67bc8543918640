"""Change events on SQLite: counters bumped in the writing transaction, polled by every process on the file.

* :func:`bump` runs inside the transaction that changes a topic's state (the keyring's ``apply``), so the counter
  and the state commit together; an upsert creates a topic's row the first time (SQLite "UPSERT", "RETURNING").
* :class:`SqliteChangeFeed` polls ``SELECT topic, version FROM change_counters`` every ``poll_s`` (default 0.1 s).
  The file is the only channel between processes, and a counter is lossless: a missed poll is caught up by the
  next one, so SQLite never needs a resync (except for counters found lower, a file restored from backup).
* The poll runs on a second connection on a thread of its own, not on the store's worker: the worker serialises
  every call of the process, so a poll queued behind a write that waits for another process's lock
  (``busy_timeout``, 5 s) or a group commit's fsync would stall every follower. In WAL mode a reader neither
  blocks nor waits for the writer (SQLite "Write-Ahead Logging", §2.2 "Concurrency"). The reader connection is
  ``query_only`` and opened ``mode=rw`` (never creating a missing file with the default mode).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from broker._backoff import Attempts, Backoff
from broker.events import FollowedFeed, check_topic
from broker.store.sqlite._worker import SqliteWorker, immediate

__all__ = ["POLL_S", "SqliteChangeFeed", "bump", "read_counters"]

log = logging.getLogger(__name__)

POLL_S = 0.1
READ_BUSY_TIMEOUT_S = 1.0
_RETRY = Backoff(initial=0.2, maximum=5.0)
_BUMP = (
    "INSERT INTO change_counters (topic, version) VALUES (?, 1) "
    "ON CONFLICT (topic) DO UPDATE SET version = version + 1 RETURNING version"
)


def bump(conn: sqlite3.Connection, topic: str) -> int:
    """Bump ``topic`` inside the caller's write transaction; its new version (visible when that commits)."""
    row = conn.execute(_BUMP, (check_topic(topic),)).fetchone()
    return int(row[0])


def read_counters(conn: sqlite3.Connection) -> dict[str, int]:
    return {str(topic): int(version) for topic, version in conn.execute("SELECT topic, version FROM change_counters")}


class _Reader:
    """A second connection to the store file, opened, used and closed only on its own thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker-sqlite-changes")
        self._conn: sqlite3.Connection | None = None

    async def counters(self) -> dict[str, int]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._read)

    def _read(self) -> dict[str, int]:
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(
                    self._path.resolve().as_uri() + "?mode=rw",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=READ_BUSY_TIMEOUT_S,
                )
                self._conn.execute("PRAGMA query_only=ON")
            return read_counters(self._conn)
        except sqlite3.Error:
            self._close()  # reopen on the next poll: the file may have been replaced
            raise

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        # Queued behind any read still running (one thread), so a connection opened by it is closed too.
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)


class SqliteChangeFeed(FollowedFeed):
    """The store's :class:`~broker.events.ChangeFeed`; polling starts with the first subscription."""

    def __init__(self, writer: SqliteWorker, *, poll_s: float = POLL_S) -> None:
        if not poll_s > 0:
            raise ValueError("the change poll interval is a positive number of seconds")
        super().__init__(f"sqlite://{writer.path}", task_name="broker-sqlite-changes")
        self._writer = writer
        self._poll_s = poll_s

    async def publish(self, topic: str) -> int:
        check_topic(topic)

        def publish_in_transaction(conn: sqlite3.Connection) -> int:
            with immediate(conn):
                return bump(conn, topic)

        return await self._writer.run(publish_in_transaction)

    async def _follow(self) -> None:
        reader = _Reader(self._writer.path)
        failures = Attempts(_RETRY)
        try:
            while True:
                try:
                    counters = await reader.counters()
                except (sqlite3.Error, OSError) as exc:
                    delay = failures.next()
                    log.warning(
                        "cannot read the change counters of %s (%s: %s); retrying in %.1f s",
                        self._store, type(exc).__name__, exc, delay,
                    )  # fmt: skip
                else:
                    failures.reset()
                    self._hub.counters_read(counters)
                    delay = self._poll_s
                await asyncio.sleep(delay)
        finally:
            await reader.close()
