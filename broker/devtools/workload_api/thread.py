"""Run a :class:`WorkloadApiServer` on its own event loop in a background thread.

py-spiffe's clients are blocking and thread-based: calling them on the server's event loop would deadlock it.
Tests (and any synchronous caller) run the server here instead::

    with WorkloadApiThread(server):
        source = X509Source(socket_path=server.address)
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from broker.devtools.workload_api.server import WorkloadApiServer

__all__ = ["WorkloadApiThread"]


class WorkloadApiThread:
    """Owns one thread and one event loop; :meth:`start` returns once the socket listens."""

    def __init__(self, server: WorkloadApiServer) -> None:
        self.server = server
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    def start(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="workload-api", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the Workload API server did not start in time")
        if self._error is not None:
            self._thread.join(timeout)
            raise self._error

    def stop(self, timeout: float = 10.0) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError("the Workload API server did not stop in time")
        self._thread = None

    def __enter__(self) -> WorkloadApiServer:
        self.start()
        return self.server

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:  # handed to the starting thread, which re-raises it
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self.server.stop()
