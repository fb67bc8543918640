"""Starting and stopping the token service in process (used by ``spiffe-broker server`` and ``dev``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from broker.identity.spiffetls.context import SourceSSLContext, server_ssl_context
from broker.server.app import build_health_app, build_token_app
from broker.server.request import DEFAULT_MAX_BODY
from broker.server.state import READINESS, SERVICE, ServiceSource
from broker.tokens.endpoint import Audit
from broker.tokens.issuer import AccessTokenIssuer
from broker.tokens.keys import KeyStore
from broker.tokens.policy import PolicyStore
from broker.web import HardenedAppRunner, ListenerLimits, start_tcp_site
from broker.web.tls_buffer import DEFAULT_TLS_READ_BUFFER

__all__ = ["RunningTokenService", "start_token_service"]

log = logging.getLogger(__name__)


@dataclass
class RunningTokenService:
    """A started token service: where it listens, and :meth:`aclose` to stop it."""

    app: web.Application
    runner: HardenedAppRunner
    port: int
    health_runner: HardenedAppRunner | None = None
    health_port: int | None = None
    ssl_context: SourceSSLContext | None = field(default=None, repr=False)

    @property
    def issuer(self) -> AccessTokenIssuer:
        return self.app[SERVICE].issuer

    async def aclose(self) -> None:
        if self.health_runner is not None:
            await self.health_runner.cleanup()
        await self.runner.cleanup()
        if self.ssl_context is not None:
            self.ssl_context.detach()


async def start_token_service(
    *,
    source: ServiceSource,
    policy_store: PolicyStore,
    key_store: KeyStore,
    listen_host: str,
    listen_port: int,
    issuer: str,
    health_host: str | None = None,
    health_port: int | None = None,
    clock: Callable[[], float] = time.time,
    max_body: int = DEFAULT_MAX_BODY,
    policy_check_interval: float = 1.0,
    limits: ListenerLimits | None = None,
    audit: Audit | None = None,
    jwks_max_age: int = 60,
    configure: Callable[[web.Application], None] | None = None,
    tls_read_buffer: int = DEFAULT_TLS_READ_BUFFER,
) -> RunningTokenService:
    """Serve the token app over TLS with the source's X.509-SVID (client certificates requested, not required:
    metadata and JWKS are public; ``/token`` refuses a client without one). Port 0 picks a free port.

    Request bodies are not decompressed (``/token`` refuses a ``Content-Encoding``): a form is a few hundred bytes,
    and a decoder is attack surface the token endpoint does not need. ``configure`` adds routes (the admin API)
    to the app before it starts. ``tls_read_buffer``: each connection's TLS read buffer in bytes, 0 for Python's
    (:mod:`broker.web.tls_buffer`: a revocation-feed follower holds its connection open)."""
    app = build_token_app(
        source=source,
        policy_store=policy_store,
        key_store=key_store,
        issuer=issuer,
        clock=clock,
        max_body=max_body,
        policy_check_interval=policy_check_interval,
        audit=audit,
        jwks_max_age=jwks_max_age,
    )
    if configure is not None:
        configure(app)
    ssl_context = server_ssl_context(source, require_client_cert=False)
    runner = HardenedAppRunner(app, limits=limits, auto_decompress=False)
    service = RunningTokenService(app=app, runner=runner, port=0, ssl_context=ssl_context)
    try:
        await runner.setup()
        service.port = await start_tcp_site(
            runner, listen_host, listen_port, ssl_context=ssl_context, tls_read_buffer=tls_read_buffer
        )
        if health_port is not None:
            await _start_health(service, health_host or listen_host, health_port, limits)
    except BaseException:
        await service.aclose()
        raise
    log.info("token service listening on %s:%d as issuer %s", listen_host, service.port, issuer)
    return service


async def _start_health(service: RunningTokenService, host: str, port: int, limits: ListenerLimits | None) -> None:
    """The plain-HTTP probe app, sharing the token app's readiness check."""
    health = HardenedAppRunner(build_health_app(service.app[READINESS]), limits=limits)
    service.health_runner = health
    await health.setup()
    service.health_port = await start_tcp_site(health, host, port)
