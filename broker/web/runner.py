"""An ``AppRunner`` whose connections are :class:`~broker.web.protocol.HardenedRequestHandler`, and its sites.

Every listener of the broker is started through this module, so each one refuses the same way, times out the
same way and logs the same way. TLS listeners also bound the handshake (``ListenerLimits.handshake_timeout``):
asyncio's default lets a client that never finishes it hold a connection for 60 s. A TLS listener may size its
connections' read buffer (``tls_read_buffer``; :mod:`broker.web.tls_buffer`), 0 keeping Python's 256 KiB.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from broker.web.access_log import RouteAccessLogger
from broker.web.protocol import HardenedRequestHandler, ListenerLimits
from broker.web.tls_buffer import tls_protocol_factory

__all__ = ["LISTEN_BACKLOG", "HardenedAppRunner", "start_sock_site", "start_tcp_site"]

LISTEN_BACKLOG = 1024
"""Connections the kernel queues for each listener before ``accept`` (capped by ``net.core.somaxconn``). aiohttp's
default, 128, refuses part of a burst of a few hundred connects on a Unix socket (``EAGAIN``) when the loop accepts
one connection per iteration, as uvloop does: 200 apps asking the sidecar at once is such a burst."""


class _HardenedServer(web.Server):
    """aiohttp's low-level server, creating hardened connection handlers."""

    def __init__(self, handler: Any, *, limits: ListenerLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits

    def __call__(self) -> HardenedRequestHandler:
        return HardenedRequestHandler(self, loop=self._loop, limits=self.limits, **self._kwargs)


class HardenedAppRunner(web.AppRunner):
    """``web.AppRunner`` with the broker's connection handler; signals stay with the caller (the CLI)."""

    def __init__(
        self,
        app: web.Application,
        *,
        limits: ListenerLimits | None = None,
        access_log_class: type[AbstractAccessLogger] = RouteAccessLogger,
        shutdown_timeout: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            app, handle_signals=False, access_log_class=access_log_class, shutdown_timeout=shutdown_timeout, **kwargs
        )
        self.limits = limits or ListenerLimits()

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()  # starts the app; its handler and request factory are reused
        return _HardenedServer(
            base.request_handler,
            request_factory=base.request_factory,
            loop=asyncio.get_running_loop(),
            limits=self.limits,
            **base._kwargs,
        )


class _TCPSite(web.TCPSite):
    """``web.TCPSite`` plus a TLS handshake deadline and, if asked, a sized TLS read buffer."""

    def __init__(
        self,
        runner: HardenedAppRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        tls_read_buffer: int = 0,
    ):
        super().__init__(runner, host, port, ssl_context=ssl_context, backlog=LISTEN_BACKLOG)
        self._handshake_timeout = runner.limits.handshake_timeout if ssl_context is not None else None
        self._tls_read_buffer = tls_read_buffer

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None  # the runner is set up before its sites start
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.BaseProtocol] = server
        tls = self._ssl_context
        if tls is not None:
            sized = tls_protocol_factory(server, tls, read_buffer=self._tls_read_buffer,
                                         handshake_timeout=self._handshake_timeout, loop=loop)  # fmt: skip
            if sized is not None:
                factory, tls = sized, None  # TLS inside each connection's protocol: the loop sees plain TCP
        self._server = await loop.create_server(
            factory,
            self._host,
            self._port,
            ssl=tls,
            ssl_handshake_timeout=self._handshake_timeout if tls is not None else None,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )


async def start_tcp_site(
    runner: HardenedAppRunner,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    tls_read_buffer: int = 0,
) -> int:
    """Serve ``runner`` on ``host:port`` (port 0: any free port); returns the bound port. ``tls_read_buffer``:
    bytes of each TLS connection's read buffer (:mod:`broker.web.tls_buffer`); 0: Python's default."""
    site = _TCPSite(runner, host, port, ssl_context=ssl_context, tls_read_buffer=tls_read_buffer)
    await site.start()
    return int(runner.addresses[-1][1])


async def start_sock_site(runner: HardenedAppRunner, sock: socket.socket) -> None:
    """Serve ``runner`` (plain HTTP) on an already bound socket; the socket is closed if that fails."""
    try:
        await web.SockSite(runner, sock, backlog=LISTEN_BACKLOG).start()
    except BaseException:
        sock.close()
        raise
