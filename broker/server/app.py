"""The token service's aiohttp applications: the TLS app (metadata, JWKS, token, health) and a plain health app.

Routes of the TLS app::

    GET  /.well-known/oauth-authorization-server   RFC 8414 metadata (no client certificate needed)
    GET  /jwks.json                                RFC 7517 JWK Set of the signing keys (no client certificate)
    POST /token                                    RFC 6749 §3.2 / RFC 8693 / RFC 8705 (X.509-SVID required)
    GET  /healthz, /readyz                         probes

The stateful service (:mod:`broker.server.stateful_service`) adds ``/revoke``, ``/introspect``
(:mod:`broker.server.token_status`) and the admin API, each advertising itself in the metadata
(:func:`broker.server.handlers.advertise`), and more readiness checks (:func:`add_readiness`).

The issuer (RFC 8414 §2, :func:`broker.oauth.metadata.normalize_issuer`) is an ``https`` URL without path,
query or fragment; JWT-SVIDs presented as subject
tokens must name it in ``aud`` (the service accepts no other audience, so a JWT-SVID minted for another service
cannot be exchanged here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from broker import tracing
from broker.errors import ConfigError, TemporarilyUnavailableError
from broker.identity.errors import IdentityError
from broker.identity.source import X509Source
from broker.oauth.metadata import normalize_issuer
from broker.server import handlers
from broker.server.request import DEFAULT_MAX_BODY
from broker.server.state import (
    CONFIG,
    JWKS_KEYS,
    METADATA_MEMBERS,
    POLICY,
    READINESS,
    SERVICE,
    SOURCE,
    SVID_MEMO,
    ServiceSource,
    TokenAppConfig,
)
from broker.tokens.endpoint import Audit
from broker.tokens.issuer import AccessTokenIssuer
from broker.tokens.keys import KeyStore
from broker.tokens.policy import PolicyStore
from broker.tokens.standard import standard_endpoint
from broker.tokens.svid_cache import ValidatedSvidCache
from broker.web.errors import error_middleware
from broker.web.front import FRONT, FrontMiddleware
from broker.web.request_id import request_id_middleware
from broker.web.tracing import tracing_middleware

__all__ = ["add_readiness", "build_health_app", "build_token_app", "normalize_issuer"]

log = logging.getLogger(__name__)


def build_token_app(
    *,
    source: ServiceSource,
    policy_store: PolicyStore,
    key_store: KeyStore,
    issuer: str,
    clock: Callable[[], float] = time.time,
    max_body: int = DEFAULT_MAX_BODY,
    policy_check_interval: float = 1.0,
    audit: Audit | None = None,
    jwks_max_age: int = 60,
) -> web.Application:
    """The TLS token service app; ``source`` provides trust bundles (X.509 for clients, JWT for subject tokens);
    ``audit`` records every outcome at ``/token`` (the issuance ledger and the audit trail)."""
    config = TokenAppConfig(
        issuer=normalize_issuer(issuer),
        max_body=max_body,
        policy_check_interval=policy_check_interval,
        jwks_max_age=jwks_max_age,
    )
    app = _new_app(max_body)
    app[CONFIG] = config
    app[SOURCE] = source
    app[JWKS_KEYS] = key_store
    app[POLICY] = policy_store
    app[SVID_MEMO] = svid_memo = ValidatedSvidCache()
    app[SERVICE] = standard_endpoint(
        issuer=AccessTokenIssuer(issuer=config.issuer, key_store=key_store, clock=clock),
        policy_store=policy_store,
        x509_bundles=lambda: source.x509_bundles(),  # resolved per request, as the handler always did
        jwt_bundles=source.jwt_bundles,
        svid_memo=svid_memo,
        clock=clock,
        audit=audit,
    )
    app[READINESS] = readiness_check(source, policy_store, key_store)
    app[METADATA_MEMBERS] = {}
    app.router.add_get("/.well-known/oauth-authorization-server", handlers.metadata)
    app.router.add_get("/jwks.json", handlers.jwks_handler)
    app.router.add_post("/token", handlers.token)
    _add_probes(app)
    app.cleanup_ctx.append(_policy_watcher)
    return app


def _new_app(max_body: int) -> web.Application:
    front = None if tracing.configured() else FrontMiddleware()
    app = web.Application(middlewares=_middlewares(front), client_max_size=max_body)
    if front is not None:
        app[FRONT] = front  # the metrics mounter gives it the instruments (broker.server.metrics)
    return app


def _middlewares(front: FrontMiddleware | None) -> list[Any]:
    """Metrics, request id and errors folded into one middleware (:mod:`broker.web.front`); with a tracer
    provider, the request id, the request span and the error renderer as three (the metrics mounter then puts its
    own middleware first)."""
    if front is not None:
        return [front]
    return [request_id_middleware, tracing_middleware, error_middleware]


def build_health_app(readiness: Callable[[], str | None]) -> web.Application:
    """A plain-HTTP app with only ``/healthz`` and ``/readyz`` (for Kubernetes probes)."""
    app = web.Application(middlewares=[error_middleware])
    app[READINESS] = readiness
    _add_probes(app)
    return app


def _add_probes(app: web.Application) -> None:
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)


def readiness_check(source: X509Source, policy_store: PolicyStore, key_store: KeyStore) -> Callable[[], str | None]:
    """None when ready, else a short reason (no secrets): SVID missing, policy or key unreadable."""

    def check() -> str | None:
        try:
            source.x509_svid()
        except IdentityError:
            return "no X.509-SVID"
        try:
            policy_store.current()
            key_store.active_key()
        except (ConfigError, TemporarilyUnavailableError) as exc:
            return exc.description
        return None

    return check


def add_readiness(app: web.Application, check: Callable[[], str | None]) -> None:
    """Make the app ready only when ``check`` (None when ready, else a reason) is too; before the app starts."""
    first = app[READINESS]

    def both() -> str | None:
        return first() or check()

    app[READINESS] = both


async def _policy_watcher(app: web.Application) -> AsyncIterator[None]:
    """Re-read a file policy in the background, so a change (or a broken file) is noticed without requests and no
    request ever waits for a file read or a YAML parse."""
    store = app[POLICY]
    refresh = getattr(store, "refresh", None)
    task = None
    if callable(refresh):
        task = asyncio.create_task(_watch(refresh, app[CONFIG].policy_check_interval), name="policy-watcher")
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _watch(refresh: Callable[[], object], interval: float) -> None:
    """Call ``refresh`` every ``interval`` seconds in a worker thread (a large file must not stall the loop)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(refresh)
        except Exception as exc:  # a watcher must survive anything; the store keeps the last good policy
            log.error("policy watcher: unexpected %s", type(exc).__name__)
