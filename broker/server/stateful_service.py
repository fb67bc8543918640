"""The token service with its shared state: what ``spiffe-broker server`` and ``dev`` run.

:func:`start_stateful_token_service` opens the state (:mod:`broker.server.stateful`: store, keyring, ledger,
audit), starts the token service on it (the keyring signs and serves the JWKS, the recorder is the endpoint's
audit hook) and mounts the admin API (:mod:`broker.admin`) and the sidecars' API-key exception endpoints
(:mod:`broker.server.apikeys`) on the same TLS listener. Stopping closes them in reverse: the listener first (no
new requests), then the state (the ledger and audit trail drained, the store closed).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from broker.admin.adapters import (
    JournalAuditReader,
    KeyringAdmin,
    RegistryClientAdmin,
    StoreStatusInfo,
    TrailAdminAudit,
)
from broker.admin.app import add_admin_routes
from broker.apikeys.registry import ApiKeyRegistry
from broker.config import BrokerSettings
from broker.errors import ConfigError
from broker.identity.errors import IdentityError
from broker.identity.spiffeid import SpiffeId
from broker.server.apikeys import add_apikey_routes, open_apikeys
from broker.server.app import add_readiness
from broker.server.assertions import ClientAssertions, open_assertions
from broker.server.feed import add_revocation_feed
from broker.server.metrics import ServiceMetrics
from broker.server.revocations import ReplicaRevocations
from broker.server.service import RunningTokenService, start_token_service
from broker.server.state import ServiceSource
from broker.server.stateful import ServiceState, open_state
from broker.server.token_status import token_status_mounter
from broker.tokens.introspection import IntrospectionAccess
from broker.tokens.policy import MAX_TOKEN_LIFETIME, PolicyStore
from broker.tokens.quarantine import Quarantines
from broker.web import ListenerLimits

__all__ = ["StatefulTokenService", "admin_ids", "start_stateful_token_service"]

log = logging.getLogger(__name__)


@dataclass
class StatefulTokenService:
    service: RunningTokenService
    state: ServiceState
    revocations: ReplicaRevocations | None = None  # the replica's view of the revocation log
    assertions: ClientAssertions | None = None  # client assertions, DPoP, the client registry, clock drift
    metrics: ServiceMetrics | None = None

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def health_port(self) -> int | None:
        return self.service.health_port

    @property
    def app(self) -> web.Application:
        return self.service.app

    async def aclose(self) -> None:
        try:
            try:
                if self.metrics is not None:
                    await self.metrics.aclose()
            finally:
                await self.service.aclose()
        finally:
            await self.state.aclose()


async def start_stateful_token_service(
    settings: BrokerSettings,
    *,
    source: ServiceSource,
    policy_store: PolicyStore,
    issuer: str,
    listen_host: str,
    listen_port: int,
    health_host: str | None = None,
    health_port: int | None = None,
    clock: Callable[[], float] = time.time,
    legacy_dir: Path | None = None,
    generate_kek_in: Path | None = None,
    limits: ListenerLimits | None = None,
) -> StatefulTokenService:
    """Open the state, then serve (see the module docstring); a failure to start closes what was opened."""
    access = IntrospectionAccess.parse(settings.introspection.spiffe_ids, settings.introspection.audiences)
    state = await open_state(
        settings, policy_store=policy_store, clock=clock, legacy_dir=legacy_dir, generate_kek_in=generate_kek_in
    )
    if not settings.ledger.record_tokens:
        log.warning(
            "[ledger] record_tokens is off: no issuance ledger and no token.issued/token.refused audit records; "
            "keys revoke cannot tell its blast radius (meant for benchmarks only)"
        )
    try:
        revocations = await _open_revocations(settings, state, clock)
        assertions = await open_assertions(
            settings, state, jwt_bundles=source.jwt_bundles, policy_store=policy_store, clock=clock
        )
        apikeys, apikey_service = open_apikeys(settings, state, revocations, clock)
        metrics = ServiceMetrics(settings.metrics) if settings.metrics.enabled else None
        status_mounter = token_status_mounter(
            revocations=revocations,
            keys=state.keyring,
            admins=admin_ids(settings),
            access=access,
            record_now=state.recorder.trail.record_now,
            clock=clock,
        )
        service = await start_token_service(
            source=source,
            policy_store=policy_store,
            key_store=state.keyring,
            listen_host=listen_host,
            listen_port=listen_port,
            issuer=issuer,
            health_host=health_host,
            health_port=health_port,
            clock=clock,
            limits=limits,
            audit=state.recorder if settings.ledger.record_tokens else None,
            jwks_max_age=int(settings.keyring.jwks_max_age),
            tls_read_buffer=settings.server.tls_read_buffer,
            configure=_mount_all(
                _admin_mounter(settings, source, state, clock, assertions, apikeys),
                status_mounter,
                _feed_mounter(settings, source, state),
                assertions.install,
                lambda app: add_readiness(app, assertions.clients.problem),
                lambda app: add_apikey_routes(app, apikey_service),
                _nothing if metrics is None else metrics.mounter(state, revocations, assertions, apikeys, clock),
            ),
        )
    except BaseException:
        await state.aclose()
        raise
    running = StatefulTokenService(service=service, state=state, revocations=revocations, assertions=assertions,
                                   metrics=metrics)  # fmt: skip
    if metrics is not None:
        try:
            await metrics.start()
        except BaseException:
            await running.aclose()
            raise
    return running


def _nothing(app: web.Application) -> None:
    return None


async def _open_revocations(
    settings: BrokerSettings, state: ServiceState, clock: Callable[[], float]
) -> ReplicaRevocations:
    """The replica's revocation view, after its first full read of the log; it follows the log from then on."""
    revocations = await ReplicaRevocations.open(
        state.store.revocations, state.store.changes, clock=clock, max_unconfirmed=settings.keyring.max_unconfirmed
    )
    state.tasks.append(asyncio.create_task(revocations.run(), name="revocation-log"))
    return revocations


def _feed_mounter(
    settings: BrokerSettings, source: ServiceSource, state: ServiceState
) -> Callable[[web.Application], None]:
    def mount(app: web.Application) -> None:
        add_revocation_feed(app, log_store=state.store.revocations, changes=state.store.changes,
                            bundles=source.x509_bundles, settings=settings.feed)  # fmt: skip

    return mount


def _mount_all(*mounters: Callable[[web.Application], None]) -> Callable[[web.Application], None]:
    def mount(app: web.Application) -> None:
        for mounter in mounters:
            mounter(app)

    return mount


def admin_ids(settings: BrokerSettings) -> frozenset[SpiffeId]:
    """``[admin] spiffe_ids`` parsed; one that is not a SPIFFE ID is a :class:`ConfigError` naming it."""
    parsed: set[SpiffeId] = set()
    for value in settings.admin.spiffe_ids:
        try:
            parsed.add(SpiffeId.parse(value))
        except IdentityError:
            raise ConfigError(f"admin.spiffe_ids: {value!r} is not a SPIFFE ID (spiffe://trust-domain/path)") from None
    return frozenset(parsed)


def _cutoff_window(settings: BrokerSettings) -> timedelta:
    """How long a quarantine's cutoff holds: the longest lifetime any policy may allow, plus leeway, not this
    process's current policy (it may have been shortened since a token was issued, or replicas may run different
    policy files): a cutoff that ended early would revive tokens after a release."""
    return timedelta(seconds=MAX_TOKEN_LIFETIME + settings.keyring.leeway)


def _admin_mounter(
    settings: BrokerSettings,
    source: ServiceSource,
    state: ServiceState,
    clock: Callable[[], float],
    assertions: ClientAssertions,
    apikeys: ApiKeyRegistry,
) -> Callable[[web.Application], None]:
    admins = admin_ids(settings)
    quarantines = Quarantines(state.store.revocations, state.store.ledger, state.recorder.trail, clock=clock,
                              window=lambda: _cutoff_window(settings),
                              flush_ledger=state.recorder.flush)  # fmt: skip

    def mount(app: web.Application) -> None:
        add_admin_routes(
            app,
            admins=admins,
            bundles=source.x509_bundles,
            keys=KeyringAdmin(state.keyring, state.recorder.trail, flush_ledger=state.recorder.flush, feed=quarantines),
            store=StoreStatusInfo(state.store, state.url),
            audit_reader=JournalAuditReader(state.store.audit),
            audit=TrailAdminAudit(state.recorder.trail),
            quarantines=quarantines,
            clients=RegistryClientAdmin(state.store.clients, state.recorder.trail),
            apikeys=apikeys,
            drift=assertions.drift,  # this replica's, in memory
            replica=socket.gethostname(),
        )

    return mount
