"""Starting and stopping the egress proxy: its listeners, and the catalog and report loops that run with it.

:func:`start_egress` serves the proxy on a Unix socket (created with its final mode, as the token socket: whoever
can connect to it can use the workload's API keys) and/or ``127.0.0.1:port``, through the broker's hardened
connection handler (:mod:`broker.web`), with a longer request deadline than the token listener
(:data:`EGRESS_LIMITS`): a request body is streamed to the target as it arrives, at the target's pace. No access
log is kept. The catalog is fetched every ``catalog_refresh`` seconds and a report sent every ``report_interval``
seconds; on stop, a last report is tried (for at most :data:`FINAL_REPORT_TIMEOUT` seconds), every held secret is
dropped, and the target pool and the token service client are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractResolver
from aiohttp.typedefs import Middleware

from broker.apikeys.grant import Catalog
from broker.config import EgressSettings
from broker.sidecar.egress.catalog import CatalogView
from broker.sidecar.egress.client import ApiKeyLink
from broker.sidecar.egress.grants import GrantCache
from broker.sidecar.egress.proxy import EgressProxy
from broker.sidecar.egress.report import EgressReporter
from broker.sidecar.egress.upstream import Upstream
from broker.sidecar.sockets import bind_loopback, bind_unix_socket, parse_socket_mode
from broker.web import HardenedAppRunner, ListenerLimits, start_sock_site

__all__ = ["EGRESS", "EGRESS_LIMITS", "EgressOptions", "RunningEgress", "build_egress_app", "start_egress"]

log = logging.getLogger(__name__)

EGRESS = web.AppKey("egress_proxy", EgressProxy)
EGRESS_LIMITS = ListenerLimits(request_timeout=300.0, idle_timeout=60.0)
FINAL_REPORT_TIMEOUT = 2.0
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, kw_only=True)
class EgressOptions:
    """Where the egress proxy listens and how it behaves (``[egress]``, :class:`~broker.config.EgressSettings`)."""

    socket_path: Path | None = None
    socket_mode: int = 0o600
    port: int | None = None
    ca_file: Path | None = None
    connect_timeout: float = 10.0
    catalog_refresh: float = 30.0
    report_interval: float = 5.0

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None or self.port is not None

    @classmethod
    def from_settings(cls, settings: EgressSettings, *, socket_mode: int = 0o600) -> EgressOptions:
        return cls(socket_path=settings.socket, socket_mode=socket_mode, port=settings.port,
                   ca_file=settings.ca_file, connect_timeout=settings.connect_timeout,
                   catalog_refresh=settings.catalog_refresh, report_interval=settings.report_interval)  # fmt: skip


@dataclass
class RunningEgress:
    """A started egress proxy: where it listens, its parts, and :meth:`aclose`."""

    runner: HardenedAppRunner
    proxy: EgressProxy = field(repr=False)
    socket_path: Path | None = None
    port: int | None = None

    async def aclose(self) -> None:
        await self.runner.cleanup()
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)


def _refuse_connect(proxy: EgressProxy) -> Middleware:
    """CONNECT's authority-form target matches no route: the proxy answers it (405) before routing does (404)."""

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.method == "CONNECT":
            return await proxy.handle(request)
        return await handler(request)

    return middleware


def _background(proxy: EgressProxy, link: ApiKeyLink) -> Callable[[web.Application], AsyncIterator[None]]:
    async def run(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(proxy.catalog.run(), name="apikey-catalog"),
                 loop.create_task(proxy.reporter.run(), name="apikey-report")]  # fmt: skip
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FINAL_REPORT_TIMEOUT):
                    await proxy.reporter.flush()
            proxy.grants.clear()
            await proxy.upstream.aclose()
            await link.aclose()

    return run


def build_egress_app(proxy: EgressProxy, link: ApiKeyLink) -> web.Application:
    """The egress app: every method and path goes to ``proxy``; its cleanup closes ``link``."""
    app = web.Application(middlewares=[_refuse_connect(proxy)], handler_args={"max_field_size": 16384})
    app[EGRESS] = proxy
    app.cleanup_ctx.append(_background(proxy, link))
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    return app


def build_proxy(
    link: ApiKeyLink,
    options: EgressOptions,
    *,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    resolver: AbstractResolver | None = None,
) -> EgressProxy:
    """The proxy's parts over ``link``: catalog, grants (dropped when they leave the catalog), reports, targets."""
    catalog = CatalogView(link, refresh=options.catalog_refresh, monotonic=monotonic)
    grants = GrantCache(link, clock=clock)

    def retain(fresh: Catalog) -> None:
        grants.retain(entry.name for entry in fresh.entries)

    catalog.on_change.append(retain)
    reporter = EgressReporter(link, interval=options.report_interval, clock=clock)
    upstream = Upstream(ca_file=options.ca_file, connect_timeout=options.connect_timeout, resolver=resolver)
    return EgressProxy(catalog=catalog, grants=grants, reporter=reporter, upstream=upstream)


async def start_egress(
    link: ApiKeyLink,
    options: EgressOptions,
    *,
    proxy: EgressProxy | None = None,
    limits: ListenerLimits = EGRESS_LIMITS,
) -> RunningEgress:
    """Serve the egress proxy on ``options.socket_path`` and/or ``127.0.0.1:options.port`` (0: any free port).

    ``proxy`` replaces the one :func:`build_proxy` makes (tests inject a clock or a resolver that way).
    """
    if not options.enabled:
        raise ValueError("the egress proxy needs a Unix socket path or a port")
    proxy = proxy or build_proxy(link, options)
    runner = HardenedAppRunner(build_egress_app(proxy, link), limits=limits, access_log=None)
    await runner.setup()
    running = RunningEgress(runner, proxy)
    try:
        if options.socket_path is not None:
            running.socket_path = options.socket_path
            await start_sock_site(runner, bind_unix_socket(options.socket_path, parse_socket_mode(options.socket_mode)))
        if options.port is not None:
            sock = bind_loopback(options.port)
            await start_sock_site(runner, sock)
            running.port = int(sock.getsockname()[1])
    except BaseException:
        await running.aclose()
        raise
    where = [str(options.socket_path)] if options.socket_path is not None else []
    where += [f"127.0.0.1:{running.port}"] if running.port is not None else []
    log.info("egress proxy (API-key injection) serving on %s", ", ".join(where))
    return running
