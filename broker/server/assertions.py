"""Client assertions and DPoP on a stateful token service: what ``[assertions]`` and ``[dpop]`` turn on.

:func:`open_assertions` builds, from the open state (:mod:`broker.server.stateful`):

* the replay cache: the store's (:attr:`broker.store.base.Store.replay`: SQLite on one node, PostgreSQL shared by
  every replica, so a ``jti`` used on one replica is refused on all);
* the client registry view (:class:`~broker.server.client_registry.ClientRegistryView`, following the ``clients``
  change topic) and the guarded key fetcher for ``jwks_uri`` clients (:mod:`broker.server.client_keys`);
* the clock-drift tracker (:class:`~broker.tokens.drift.DriftTracker`);
* the server nonce source for DPoP, keyed by a secret every replica derives alike from the KEK (RFC 9449 §8);

and :meth:`ClientAssertions.install` registers ``spiffe_jwt`` and ``private_key_jwt`` on the token endpoint and
sets its sender constraint (DPoP, or the client certificate only).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from broker.config import BrokerSettings
from broker.identity.bundle import JwtBundleSet
from broker.oauth.dpop_nonce import NonceSource
from broker.oauth.replay import CountingReplayCache
from broker.server.client_keys import ClientKeyFetcher
from broker.server.client_registry import ClientRegistryView
from broker.server.jwks_fetch import GuardedJwksFetch
from broker.server.state import SERVICE
from broker.server.stateful import ServiceState
from broker.tokens.client_auth.jwt_bearer import JwtBearerAuth
from broker.tokens.client_auth.jwt_spiffe import JwtSpiffeAuth
from broker.tokens.dpop import DpopBinding
from broker.tokens.drift import DriftTracker
from broker.tokens.endpoint import CertificateBinding, SenderConstraint
from broker.tokens.policy import PolicyStore

__all__ = ["ClientAssertions", "open_assertions"]

NONCE_LABEL = b"dpop-nonce"


@dataclass
class ClientAssertions:
    settings: BrokerSettings
    state: ServiceState
    clients: ClientRegistryView
    keys: ClientKeyFetcher
    drift: DriftTracker
    nonces: NonceSource | None
    jwt_bundles: Callable[[], JwtBundleSet]
    policy_store: PolicyStore
    clock: Callable[[], float]
    assertion_replay: CountingReplayCache = field(init=False)
    proof_replay: CountingReplayCache = field(init=False)

    def __post_init__(self) -> None:
        self.assertion_replay = CountingReplayCache(self.state.store.replay)
        self.proof_replay = CountingReplayCache(self.state.store.replay)

    def install(self, app: web.Application) -> None:
        """Register the assertion methods and the sender constraint on ``app``'s token endpoint (before it starts)."""
        endpoint = app[SERVICE]
        issuer, replay = endpoint.issuer.issuer, self.assertion_replay
        if self.settings.assertions.enabled:
            spiffe = JwtSpiffeAuth(issuer=issuer, jwt_bundles=self.jwt_bundles, policy_store=self.policy_store,
                                   replay=replay, drift=self.drift, clock=self.clock)  # fmt: skip
            bearer = JwtBearerAuth(issuer=issuer, clients=self.clients, keys=self.keys, replay=replay,
                                   drift=self.drift, clock=self.clock)  # fmt: skip
            endpoint.register_assertion(spiffe)
            endpoint.register_assertion(bearer)
        endpoint.sender_constraint = self._sender_constraint(f"{issuer}/token")

    def _sender_constraint(self, token_endpoint: str) -> SenderConstraint:
        allow_bearer = self.settings.assertions.allow_bearer_tokens
        dpop = self.settings.dpop
        if not dpop.enabled:
            return CertificateBinding(allow_bearer=allow_bearer)
        return DpopBinding(token_endpoint=token_endpoint, replay=self.proof_replay, drift=self.drift,
                           algorithms=dpop.algorithms, max_age=dpop.max_age, nonces=self.nonces,
                           allow_bearer=allow_bearer, clock=self.clock)  # fmt: skip


async def open_assertions(
    settings: BrokerSettings,
    state: ServiceState,
    *,
    jwt_bundles: Callable[[], JwtBundleSet],
    policy_store: PolicyStore,
    clock: Callable[[], float] = time.time,
) -> ClientAssertions:
    """Read the client registry (a store error fails the start) and follow it from then on."""
    clients = await ClientRegistryView.open(
        state.store.clients, state.store.changes, max_unconfirmed=settings.keyring.max_unconfirmed
    )
    state.tasks.append(asyncio.create_task(clients.run(), name="client-registry"))
    ca_file = settings.assertions.jwks_uri_ca_file
    fetch = GuardedJwksFetch(allowed_networks=settings.assertions.jwks_uri_allowed_networks,
                             ca_file=None if ca_file is None else str(ca_file))  # fmt: skip
    nonces = None
    if settings.dpop.require_nonce:
        if state.secrets is None:
            raise ValueError("DPoP nonces need the KEK-derived secret of a stateful service")
        nonces = NonceSource(state.secrets.derive(NONCE_LABEL), lifetime=settings.dpop.nonce_lifetime)
    return ClientAssertions(
        settings=settings,
        state=state,
        clients=clients,
        keys=ClientKeyFetcher(fetch),
        drift=DriftTracker(leeway=settings.assertions.leeway),
        nonces=nonces,
        jwt_bundles=jwt_bundles,
        policy_store=policy_store,
        clock=clock,
    )
