"""One SQLite connection on one worker thread: the event loop never waits on the disk.

Every call runs on a single dedicated thread (``sqlite3`` connections are not shared across threads here), so the
store's calls are serialised in-process; across processes, ``BEGIN IMMEDIATE`` takes the database's write lock at
the start of each write transaction (SQLite "Transaction", §2.2), and ``busy_timeout`` bounds the wait for it.
Errors from :mod:`sqlite3` are translated here, once, into the store's branch of the :class:`BrokerError` tree.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from broker.audit.journal import epoch_micros
from broker.errors import StoreCorruptError, StoreError, StoreUnavailableError

__all__ = ["SqliteWorker", "from_micros", "immediate", "to_micros"]

T = TypeVar("T")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(at: datetime | None) -> int | None:
    return None if at is None else epoch_micros(at)


def from_micros(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception.

    A failing ``COMMIT`` (a deferred constraint, ``SQLITE_BUSY``, a full disk) is rolled back too. The rollback
    runs only while a transaction is open: SQLite may already have ended it, and a second error must not hide
    the first.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SqliteWorker:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker-sqlite")
        self.conn: sqlite3.Connection | None = None

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the worker thread, its sqlite3 errors translated."""
        if self.conn is None:
            raise StoreError(f"store sqlite://{self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    async def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the worker thread (opening and closing the connection)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._translated, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.conn
        if conn is None:
            raise StoreError(f"store sqlite://{self.path} is closed")
        return self._translated(lambda: fn(conn))

    def _translated(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreUnavailableError(f"store sqlite://{self.path} is busy (locked by another writer)") from exc
            raise StoreUnavailableError(f"store sqlite://{self.path} failed: {exc}") from exc
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as exc:
            raise StoreCorruptError(
                f"store sqlite://{self.path} is not a SQLite database or is damaged ({exc}): restore it from a "
                "backup, or point --store at another file; nothing was changed"
            ) from exc

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)
