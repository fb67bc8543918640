"""The embedded dev Workload API server: grpclib on a Unix socket, backed by a :class:`DevCA`.

Lifecycle (paired, as aiohttp's cleanup contexts are): :meth:`WorkloadApiServer.start` issues the SVIDs, removes
a *stale* socket file (a live one, or anything that is not a socket, is an error), listens, makes the socket
connectable by every user (attestation decides what a caller gets, as with SPIRE's agent socket) and starts the
maintenance task; :meth:`WorkloadApiServer.stop` undoes all of it. The maintenance task re-reads the entries every
``entries_poll_interval`` seconds and wakes up in time for the next half-life rotation, so a pushed SVID always
reaches open streams well before the previous one expires.

Connections are bounded: one whose 24-byte HTTP/2 client connection preface (RFC 9113 §3.4) has not arrived
within ``preface_timeout`` seconds is closed, and at most ``max_connections`` are open at once (one more is
closed as soon as it is accepted), so idle or slow clients cannot hold the listener's resources.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from grpclib.protocol import H2Protocol
from grpclib.server import Server
from prometheus_client.core import Metric

from broker._unix import MAX_UNIX_PATH_BYTES, fits_sun_path, remove_stale_socket, socket_in_use
from broker.devtools.devca import DevCA
from broker.devtools.workload_api.entries import EntryStore
from broker.devtools.workload_api.handlers import WorkloadApiHandlers
from broker.devtools.workload_api.service import SpiffeWorkloadApiService
from broker.devtools.workload_api.state import WorkloadState
from broker.identity.errors import IdentityError
from broker.metrics import ScrapeCollector, counter_family, new_registry
from broker.web.metrics import MetricsListener, start_metrics_listener

__all__ = ["MAX_SOCKET_PATH_BYTES", "WorkloadApiServer", "WorkloadApiServerError", "serve_until_signalled"]

log = logging.getLogger(__name__)

MAX_SOCKET_PATH_BYTES = MAX_UNIX_PATH_BYTES  # sizeof(sockaddr_un.sun_path) - 1 on Linux (unix(7))
SOCKET_MODE = 0o777  # connectable by anyone: SO_PEERCRED attestation decides, not file permissions
STOP_TIMEOUT = 5.0  # seconds :meth:`WorkloadApiServer.stop` waits for closed connections and cancelled calls
PREFACE_TIMEOUT = 10.0  # seconds a new connection has to send its HTTP/2 preface
MAX_CONNECTIONS = 256
_PREFACE_BYTES = 24  # len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), RFC 9113 §3.4


class WorkloadApiServerError(IdentityError):
    """The Workload API server cannot start (socket path unusable or in use)."""

    reason = "workload_api_server_error"


class _Server(Server):
    """grpclib's server, remembering its connections so that stopping can close them.

    grpclib 0.4.9's ``Server.close()`` cancels the running calls but leaves accepted connections open until the
    client hangs up; a stopped server must not keep them. They must be closed *before* ``wait_closed()``: since
    Python 3.12.1 asyncio's ``Server.wait_closed()`` waits for every accepted connection to end (gh-79033), so a
    connected client would otherwise keep ``stop()`` (and SIGTERM) waiting for ever.
    """

    def __init__(self, handlers: Any, *, preface_timeout: float, max_connections: int) -> None:
        super().__init__(handlers)
        self._protocols: weakref.WeakSet[H2Protocol] = weakref.WeakSet()
        self.preface_timeout, self.max_connections = preface_timeout, max_connections
        self.open_connections = 0
        self.refusing = False  # at max_connections: warned once, until a connection ends

    def _protocol_factory(self) -> H2Protocol:
        plain = super()._protocol_factory()
        protocol = _GuardedProtocol(plain.handler, plain.config, plain.h2_config, server=self)
        self._protocols.add(protocol)
        return protocol

    def close_connections(self) -> None:
        for protocol in list(self._protocols):
            processor = getattr(protocol, "processor", None)  # absent until connection_made
            if processor is not None:
                processor.close("server stopped")


class _GuardedProtocol(H2Protocol):
    """grpclib's connection, closed if its preface is late or the server is at ``max_connections``."""

    def __init__(self, *args: Any, server: _Server) -> None:
        super().__init__(*args)
        self._server = server
        self._received = 0
        self._counted = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._server.open_connections >= self._server.max_connections:
            if not self._server.refusing:
                log.warning("Workload API at %d connections: closing new ones", self._server.max_connections)
            self._server.refusing = True
            transport.close()
            return
        self._server.open_connections += 1
        self._counted = True
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._server.preface_timeout, self._preface_late, transport)
        super().connection_made(transport)

    def _preface_late(self, transport: asyncio.BaseTransport) -> None:
        log.debug("Workload API connection closed: no HTTP/2 preface within %g s", self._server.preface_timeout)
        transport.close()

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        if self._deadline is not None and self._received >= _PREFACE_BYTES:
            self._deadline.cancel()
            self._deadline = None
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if not self._counted:
            return  # refused in connection_made: grpclib never saw it
        self._server.open_connections -= 1
        self._server.refusing = False
        super().connection_lost(exc)


class WorkloadApiServer:
    """SPIFFE Workload API for one trust domain, over a Unix socket; see the module docstring."""

    def __init__(
        self,
        *,
        ca: DevCA,
        entries: EntryStore,
        socket_path: Path,
        default_x509_ttl: float = 3600.0,
        entries_poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        preface_timeout: float = PREFACE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if not entries_poll_interval > 0:
            raise ValueError("entries_poll_interval must be positive")
        if not preface_timeout > 0 or max_connections < 1:
            raise ValueError("preface_timeout and max_connections must be positive")
        self._limits = (preface_timeout, max_connections)
        self.socket_path = Path(socket_path)
        if not fits_sun_path(self.socket_path):
            raise WorkloadApiServerError(f"socket path is longer than {MAX_SOCKET_PATH_BYTES} bytes")
        self._state = WorkloadState(ca=ca, entries=entries, default_x509_ttl=default_x509_ttl, clock=clock)
        self._poll_interval = entries_poll_interval
        self._clock = clock
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._force_rotation = False
        self.service = SpiffeWorkloadApiService(WorkloadApiHandlers(self._state))

    def metrics(self) -> Iterable[Metric]:
        """``workload_api_requests_total{method, outcome}`` (read at scrape; :mod:`broker.metrics`)."""
        samples = [(key, float(count)) for key, count in sorted(self.service.calls.items())]
        yield counter_family("workload_api_requests", "Workload API calls by method and outcome",
                             ["method", "outcome"], samples)  # fmt: skip

    async def serve_metrics(self, *, host: str = "127.0.0.1", port: int = 0) -> MetricsListener:
        """Serve :meth:`metrics` (with the process collectors) at ``http://host:port/metrics``; close it after."""
        registry = new_registry("workload_api")
        registry.register(ScrapeCollector(self.metrics))
        listener = await start_metrics_listener(registry, host=host, port=port)
        log.info("Workload API metrics on %s:%s/metrics", host, listener.port)
        return listener

    @property
    def address(self) -> str:
        """The Workload API address clients use, ``unix:///path/to/socket``."""
        return f"unix://{self.socket_path}"

    @property
    def ca(self) -> DevCA:
        return self._state.ca

    async def start(self) -> None:
        """Issue SVIDs and listen; the socket accepts connections when this returns."""
        if self._server is not None:
            raise RuntimeError("the Workload API server is already started")
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._state.refresh()
        _remove_stale_socket(self.socket_path)
        server = _Server(
            [self.service],
            preface_timeout=self._limits[0],
            max_connections=self._limits[1],
        )
        await server.start(path=str(self.socket_path))
        self._server = server
        try:
            os.chmod(self.socket_path, SOCKET_MODE)
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._maintain(), name="workload-api-maintenance")
        log.info("Workload API for %s listening on %s", self._state.trust_domain, self.address)

    async def stop(self) -> None:
        """Stop listening, end every open stream, and remove the socket file."""
        server, task = self._server, self._task
        self._server = self._task = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if server is not None:
            server.close()  # stop accepting, cancel the running calls
            server.close_connections()  # before waiting: since 3.12.1 asyncio waits for every connection to end
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await server.wait_closed()
            except TimeoutError:
                log.warning("Workload API connections still closing after %.0f s; stopping anyway", STOP_TIMEOUT)
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            log.info("Workload API on %s stopped", self.address)

    def rotate_now(self) -> None:
        """Re-issue every X.509-SVID and push it to open streams; safe to call from any thread."""
        self._force_rotation = True
        loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wakeup.set)

    async def _maintain(self) -> None:
        while True:
            await self._sleep_until_due()
            force, self._force_rotation = self._force_rotation, False
            try:
                self._state.refresh(force_rotate=force)
            except Exception:  # keep serving the current state; the next round retries
                log.exception("Workload API refresh failed")

    async def _sleep_until_due(self) -> None:
        assert self._wakeup is not None
        delay = self._poll_interval
        next_rotation = self._state.next_rotation()
        if next_rotation is not None:
            delay = min(delay, max(0.0, next_rotation - self._clock()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wakeup.wait()
        self._wakeup.clear()


def _remove_stale_socket(path: Path) -> None:
    """Make ``path`` free for a new socket: create its directory, delete a socket nobody listens on."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    found = remove_stale_socket(path, in_use=_socket_in_use)
    if found == "not a socket":
        raise WorkloadApiServerError(f"{path} exists and is not a socket; not removing it")
    if found == "in use":
        raise WorkloadApiServerError(f"{path} is in use by a running server; stop it or choose another --socket")
    if found == "removed":
        log.info("removed stale socket %s", path)


def _socket_in_use(path: Path) -> bool:
    try:
        return socket_in_use(path, timeout=1.0)
    except OSError:  # no answer (a timeout included): taken as nobody listening
        return False


async def serve_until_signalled(
    server: WorkloadApiServer,
    signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
    *,
    metrics_port: int | None = None,
) -> None:
    """Start ``server`` (and ``/metrics`` on ``127.0.0.1:metrics_port``), run until one of ``signals`` arrives,
    then stop it cleanly."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in signals:
        loop.add_signal_handler(sig, stopping.set)
    listener = None
    try:
        await server.start()
        if metrics_port is not None:
            listener = await server.serve_metrics(port=metrics_port)
        await stopping.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if listener is not None:
            await listener.aclose()
        await server.stop()
