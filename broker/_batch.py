"""Group commit: the hot path hands records over without waiting, a background task writes them in batches.

:class:`BatchWriter` is the one writer behind the issuance ledger and the audit trail (issue 9, item 4). The
technique is the group commit of database logs (Gray and Reuter, "Transaction Processing", §9.4.7): one durable
write carries every record that arrived while the previous one was in flight, so the per-record cost of a commit
round trip falls as the load rises.

* :meth:`BatchWriter.submit` is synchronous and never waits on the store. It returns False, and keeps nothing,
  when the writer is closed or its bounded queue (``capacity`` items) is full: the store is down or slower than
  the load. A caller that must not lose the record (a security audit record) refuses its own request then,
  fail closed; nothing is ever dropped silently.
* The background task writes at most ``batch_max`` items per store call. It waits ``batch_window`` seconds from
  the oldest queued item before writing, unless ``batch_max`` items are queued, a :meth:`~BatchWriter.flush` is
  waiting or the writer is closing. Items that queued up while a write was in flight have already waited: they go
  at once.
* A failed write is retried, the same batch in the same order, after a jittered backoff (:mod:`broker._backoff`);
  later items queue behind it. ``write`` must therefore be idempotent or tolerate a repeat of a batch whose
  commit succeeded but whose answer was lost (the ledger ignores a repeated ``jti``).
* :meth:`~BatchWriter.flush` returns when everything submitted before it is written; :meth:`~BatchWriter.close`
  refuses new items and drains the queue: on a clean stop nothing that ``submit`` accepted is lost.

What a crash loses (``kill -9``, power loss): the items accepted but not yet committed. While the store keeps up,
that is what was submitted in the last ``batch_window`` seconds plus the batch in flight; while the store is down
or slow, it is everything queued, at most ``capacity`` items (past that, ``submit`` refuses).

Call :meth:`~BatchWriter.submit` from the event loop's thread only (it is not thread-safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from itertools import islice
from types import TracebackType
from typing import Generic, TypeVar

from broker._backoff import Attempts, Backoff

__all__ = ["DEFAULT_BACKOFF", "BatchWriter"]

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_BACKOFF = Backoff(initial=0.05, maximum=5.0)
_LOG_EVERY = 20  # after the first failure, one warning per this many consecutive failures


class BatchWriter(Generic[T]):
    """Batches ``submit``-ted items into calls of ``write(batch)``; see the module docstring for the guarantees."""

    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[object]],
        *,
        name: str,
        batch_window: float = 0.05,
        batch_max: int = 512,
        capacity: int = 8192,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        if batch_window < 0 or batch_max < 1 or capacity < batch_max:
            raise ValueError("batch_window >= 0, batch_max >= 1 and capacity >= batch_max")
        self.name = name
        self._write = write
        self._window = batch_window
        self._batch_max = batch_max
        self._capacity = capacity
        self._attempts = Attempts(backoff)
        self._queue: deque[tuple[float, T]] = deque()
        self._wake = asyncio.Event()
        self._accepted = 0
        self._written = 0
        self._refused = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.write_observers: list[Callable[[float, bool], None]] = []  # (seconds, succeeded) of each write

    @property
    def pending(self) -> int:
        """Items accepted and not yet written."""
        return len(self._queue)

    @property
    def written(self) -> int:
        return self._written

    @property
    def refused(self) -> int:
        """Items :meth:`submit` refused (queue full or writer closed) since the start."""
        return self._refused

    def has_room(self, items: int = 1) -> bool:
        """Whether :meth:`submit` would accept ``items`` more items now."""
        return not self._closing and len(self._queue) + items <= self._capacity

    def submit(self, item: T) -> bool:
        """Queue ``item`` for the next batch; False (and ``item`` not kept) when closed or full."""
        if not self.has_room():
            self._refused += 1
            return False
        self._queue.append((asyncio.get_running_loop().time(), item))
        self._accepted += 1
        if len(self._queue) == 1 or len(self._queue) >= self._batch_max:
            self._wake.set()
        return True

    def start(self) -> None:
        """Start the background writer on the running loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batch-writer-{self.name}")

    async def flush(self) -> None:
        """Return when every item accepted before this call is written (it waits out store outages)."""
        target = self._accepted
        if self._written >= target:
            return
        self.start()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        self._wake.set()
        await asyncio.shield(waiter)

    async def close(self, timeout: float | None = None) -> int:
        """Refuse new items, write everything queued, stop; the number of items lost (0 unless ``timeout`` hit)."""
        self._closing = True
        if self._queue:
            self.start()
        self._wake.set()
        task = self._task
        if task is None:
            return 0
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            lost = len(self._queue)
            log.error("%s: closed with %d items not written (the store did not take them in time)", self.name, lost)
            self._fail_waiters()
            return lost
        return 0

    async def __aenter__(self) -> BatchWriter[T]:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._wait_for_batch()
            batch = [item for _, item in islice(self._queue, self._batch_max)]
            if await self._write_once(batch):
                for _ in batch:
                    self._queue.popleft()
                self._written += len(batch)
                self._release_waiters()

    async def _wait_for_batch(self) -> None:
        """Until the oldest item has waited ``batch_window``, or something asks for the batch to go now."""
        loop = asyncio.get_running_loop()
        while not self._urgent():
            remaining = self._queue[0][0] + self._window - loop.time()
            if remaining <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()

    def _urgent(self) -> bool:
        return self._closing or len(self._queue) >= self._batch_max or bool(self._waiters)

    async def _write_once(self, batch: Sequence[T]) -> bool:
        started = time.perf_counter()
        try:
            await self._write(batch)
        except Exception as exc:  # retried: the store may come back; the queue bounds what waits meanwhile
            self._observe(started, ok=False)
            failures = self._attempts.failures
            if failures % _LOG_EVERY == 0:
                log.warning(
                    "%s: writing %d items failed (%d consecutive failures; %d queued), retrying: %s",
                    self.name, len(batch), failures + 1, len(self._queue), _describe(exc),
                )  # fmt: skip
            await asyncio.sleep(self._attempts.next())
            return False
        self._observe(started, ok=True)
        if self._attempts.failures:
            log.info("%s: writing again after %d failed attempts", self.name, self._attempts.failures)
        self._attempts.reset()
        return True

    def _observe(self, started: float, *, ok: bool) -> None:
        seconds = time.perf_counter() - started
        for observe in self.write_observers:
            observe(seconds, ok)

    def _release_waiters(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._written:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _fail_waiters(self) -> None:
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RuntimeError(f"{self.name} closed before these items were written"))


def _describe(exc: Exception) -> str:
    """The error's own safe text for a broker error (``detail``), else only its type (it may quote data)."""
    detail = getattr(exc, "detail", None)
    return f"{type(exc).__name__}: {detail}" if isinstance(detail, str) and detail else type(exc).__name__
