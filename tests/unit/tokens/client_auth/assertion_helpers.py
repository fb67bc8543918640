"""Building blocks of the client assertion tests: signed assertions (signed by a signer independent of the code
under test, so any header or claim can be forged), and a token endpoint configured as the stateful service
configures it (``tls_client_auth``, ``spiffe_jwt``, ``private_key_jwt``, DPoP), with a fixed clock, an in-memory
replay cache and an audit trail that records every token issued.

Imported as ``tests.unit.tokens.client_auth.assertion_helpers``.
"""

from __future__ import annotations

import json
import secrets
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from broker.devtools.devca import DevCA
from broker.errors import OAuthError
from broker.jose.jwk import ec_public_jwk
from broker.oauth.constants import ASSERTION_TYPE_JWT_BEARER, ASSERTION_TYPE_JWT_SPIFFE
from broker.oauth.dpop_nonce import NonceSource
from broker.oauth.replay import MemoryReplayCache, ReplayCache, ReplayCacheUnavailable
from broker.tokens.client_auth import RequestContext
from broker.tokens.client_auth.jwt_bearer import JwtBearerAuth
from broker.tokens.client_auth.jwt_spiffe import JwtSpiffeAuth
from broker.tokens.client_auth.mtls import TlsClientAuth
from broker.tokens.clients import RegisteredClient
from broker.tokens.dpop import DpopBinding
from broker.tokens.drift import DriftTracker
from broker.tokens.endpoint import CertificateBinding, SenderConstraint, TokenEndpoint, TokenResponse
from broker.tokens.grants.client_credentials import ClientCredentialsGrant
from broker.tokens.grants.token_exchange import TokenExchangeGrant
from broker.tokens.issuer import AccessTokenIssuer, AuthenticatedClient, IssuedToken
from broker.tokens.keys import InMemoryKeyStore
from broker.tokens.policy import InMemoryPolicyStore, parse_policy
from broker.tokens.svid_cache import ValidatedSvidCache
from tests.jose_helpers import DROP, b64, sign
from tests.unit.oauth.dpop_helpers import forge
from tests.unit.tokens.client_registry_fake import LEGACY
from tests.unit.tokens.endpoint_helpers import API, ISSUER, cc_form

__all__ = ["DROP", "LEGACY"]

NOW = float(int(time.time()))  # real time: the dev CA's certificates are valid now
LEEWAY = 30.0
TOKEN_URL = f"{ISSUER}/token"
CLIENT_ID = "billing"
WEB = "spiffe://example.org/ns/shop/sa/web"
KID = "k1"


def policy_text(reuse: str | None = None, max_assertion_lifetime: int | None = None) -> str:
    """The shop's web workload and the registered client's SPIFFE ID may get tokens for :data:`API`."""
    extra = ""
    if reuse is not None:
        extra += f"    jwt_svid_reuse: {reuse}\n"
    if max_assertion_lifetime is not None:
        extra += f"    max_assertion_lifetime: {max_assertion_lifetime}\n"
    return (
        "rules:\n"
        f"  - spiffe_id: {WEB}\n    audiences: [{json.dumps(API)}]\n    scopes: [orders:read]\n"
        "    max_token_lifetime: 120\n" + extra + f"  - spiffe_id: {LEGACY}\n    audiences: [{json.dumps(API)}]\n"
    )


class Clock:
    """A settable clock."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Clients:
    """The replica's view of the client registry (:class:`~broker.tokens.client_auth.jwt_bearer.ClientLookup`)."""

    def __init__(self, *clients: RegisteredClient) -> None:
        self.clients = {client.client_id: client for client in clients}

    def get(self, client_id: str) -> RegisteredClient | None:
        return self.clients.get(client_id)


class InlineKeys:
    """:class:`~broker.tokens.client_auth.jwt_bearer.ClientKeys` for inline JWKS; records the ``kid`` asked for."""

    def __init__(self) -> None:
        self.asked: list[str | None] = []

    async def keys(self, client: RegisteredClient, *, kid: str | None) -> Sequence[Mapping[str, Any]]:
        self.asked.append(kid)
        assert client.jwks is not None
        return list(client.jwks["keys"])


class UnavailableReplay:
    """A replay cache whose store does not answer."""

    def __init__(self) -> None:
        self.calls = 0

    async def add(self, key: str, *, now: datetime, expires_at: datetime) -> bool:
        self.calls += 1
        raise ReplayCacheUnavailable("store did not answer (test)")

    async def prune(self, now: datetime) -> int:
        return 0


class RecordingAudit:
    """Every token issued and every refusal, in order."""

    def __init__(self) -> None:
        self.issued_tokens: list[IssuedToken] = []
        self.refusals: list[OAuthError] = []

    def issued(self, client: AuthenticatedClient, token: IssuedToken) -> None:
        self.issued_tokens.append(token)

    def refused(
        self,
        error: OAuthError,
        client: AuthenticatedClient | None,
        grant_type: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.refusals.append(error)


@dataclass
class ClientKey:
    """A registered client's P-256 key pair."""

    private: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    kid: str = KID

    def jwk(self, **members: str) -> dict[str, str]:
        return {**ec_public_jwk(self.private.public_key()), "kid": self.kid, **members}


def registered(key: ClientKey, **overrides: Any) -> RegisteredClient:
    """The registered client ``billing`` acting as :data:`LEGACY`, with ``key`` as its one inline key."""
    fields: dict[str, Any] = {"jwks": {"keys": [key.jwk(alg="ES256")]}, **overrides}
    return RegisteredClient(CLIENT_ID, LEGACY, **fields)


def jws(header: dict[str, Any], claims: dict[str, Any], key: Any, alg: str | None = None) -> str:
    """A compact JWS of ``header`` and ``claims`` (``DROP`` values left out), signed for ``alg``."""
    head = {k: v for k, v in header.items() if v is not DROP}
    body = {k: v for k, v in claims.items() if v is not DROP}
    signing_input = b64(json.dumps(head).encode()) + "." + b64(json.dumps(body).encode())
    return signing_input + "." + b64(sign(alg or str(head.get("alg")), key, signing_input.encode()))


def bearer_claims(**overrides: Any) -> dict[str, Any]:
    """Valid RFC 7523 §3 claims of the registered client at :data:`NOW` (a 30 s lifetime, a fresh ``jti``)."""
    base: dict[str, Any] = {
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "aud": ISSUER,
        "iat": NOW,
        "exp": NOW + 30,
        "jti": secrets.token_urlsafe(12),
    }
    return {**base, **overrides}


def bearer_assertion(
    key: ClientKey, *, header: dict[str, Any] | None = None, signing_key: Any = None, **claims: Any
) -> str:
    """A ``private_key_jwt`` assertion signed with ``key`` (or ``signing_key``), header and claims overridable."""
    head: dict[str, Any] = {"alg": "ES256", "kid": key.kid, "typ": "JWT", **(header or {})}
    return jws(head, bearer_claims(**claims), key.private if signing_key is None else signing_key)


def spiffe_claims(**overrides: Any) -> dict[str, Any]:
    """Valid JWT-SVID claims for :data:`WEB` with this server as sole audience, a 30 s lifetime and a ``jti``."""
    base: dict[str, Any] = {"sub": WEB, "aud": [ISSUER], "iat": NOW, "exp": NOW + 30, "jti": secrets.token_urlsafe(12)}
    return {**base, **overrides}


def spiffe_assertion(ca: DevCA, *, header: dict[str, Any] | None = None, **claims: Any) -> str:
    """A JWT-SVID signed by ``ca``'s JWT authority (JWT-SVID §2: ES256, ``kid``, ``typ: JWT``)."""
    head: dict[str, Any] = {"alg": "ES256", "kid": ca.jwt_kid, "typ": "JWT", **(header or {})}
    return jws(head, spiffe_claims(**claims), ca.jwt_key)


def assertion_form(
    assertion: str | None, assertion_type: str | None = ASSERTION_TYPE_JWT_BEARER, **extra: Any
) -> dict[str, list[str]]:
    """A ``client_credentials`` form for :data:`API` carrying a client assertion (RFC 7521 §4.2)."""
    fields: dict[str, Any] = dict(extra)
    if assertion is not None:
        fields["client_assertion"] = assertion
    if assertion_type is not None:
        fields["client_assertion_type"] = assertion_type
    return cc_form(**fields)


def spiffe_form(assertion: str, **extra: Any) -> dict[str, list[str]]:
    return assertion_form(assertion, ASSERTION_TYPE_JWT_SPIFFE, **extra)


def dpop_proof(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    *,
    alg: str = "ES256",
    header: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A DPoP proof (RFC 9449 §4.2) for ``POST`` :data:`TOKEN_URL` at :data:`NOW`, signed for ``alg``; header
    members and claims overridable (``DROP`` leaves one out)."""
    base: dict[str, Any] = {"htm": "POST", "htu": TOKEN_URL, "iat": int(NOW), "jti": secrets.token_urlsafe(12)}
    return forge(key, alg=alg, header=header, **{**base, **claims})


class NoCertificateTls:
    """A TLS connection whose peer sent no certificate."""

    def getpeercert(self, binary_form: bool = False) -> None:
        return None


def no_certificate(**fields: Any) -> RequestContext:
    return RequestContext(tls=cast(ssl.SSLObject, NoCertificateTls()), **fields)


@dataclass
class Service:
    """A configured endpoint and what the tests look at: tokens issued, the replay cache, drift, the clock."""

    endpoint: TokenEndpoint
    ca: DevCA
    key_store: InMemoryKeyStore
    audit: RecordingAudit
    clock: Clock
    replay: ReplayCache
    drift: DriftTracker
    clients: Clients
    keys: InlineKeys
    nonces: NonceSource | None
    policy: InMemoryPolicyStore

    async def request(
        self,
        form: Mapping[str, Sequence[str]],
        context: RequestContext | None = None,
        transport: AuthenticatedClient | None = None,
    ) -> TokenResponse:
        """As the HTTP handler: step 1 from ``context`` (unless a verified ``transport`` client is given), then
        step 2 with the form."""
        context = context if context is not None else no_certificate()
        if transport is None:
            transport = self.endpoint.authenticate(context)
        return await self.endpoint.handle(form, transport, context)

    async def refused(
        self,
        form: Mapping[str, Sequence[str]],
        context: RequestContext | None = None,
        transport: AuthenticatedClient | None = None,
    ) -> OAuthError:
        """The refusal of the request, checking that it issued no token."""
        before = self.endpoint.issuer.issued_count
        with pytest.raises(OAuthError) as caught:
            await self.request(form, context, transport)
        assert self.endpoint.issuer.issued_count == before
        assert len(self.audit.issued_tokens) == before
        return caught.value


def make_service(
    ca: DevCA,
    *,
    client_key: ClientKey | None = None,
    clients: Sequence[RegisteredClient] | None = None,
    reuse: str | None = None,
    dpop: bool = True,
    nonce: bool = False,
    allow_bearer: bool = False,
    replay: ReplayCache | None = None,
    leeway: float = LEEWAY,
) -> Service:
    """The endpoint as the stateful service installs it (``broker.server.assertions``), at :data:`NOW`."""
    clock = Clock()
    key_store = InMemoryKeyStore()
    audit = RecordingAudit()
    cache: ReplayCache = replay if replay is not None else MemoryReplayCache()
    drift = DriftTracker(leeway=leeway)
    registry = Clients(*(clients if clients is not None else [registered(client_key or ClientKey())]))
    keys = InlineKeys()
    policy = InMemoryPolicyStore(parse_policy(policy_text(reuse)))
    nonces = NonceSource(secrets.token_bytes(32), clock=clock) if nonce else None
    sender: SenderConstraint = CertificateBinding(allow_bearer=allow_bearer)
    if dpop:
        sender = DpopBinding(token_endpoint=TOKEN_URL, replay=cache, drift=drift, nonces=nonces,
                             allow_bearer=allow_bearer, clock=clock)  # fmt: skip
    issuer = AccessTokenIssuer(issuer=ISSUER, key_store=key_store, clock=clock)
    endpoint = TokenEndpoint(issuer=issuer, policy_store=policy, audit=audit, sender_constraint=sender)
    jwt_bundles = lambda: {ca.trust_domain: ca.jwt_bundle()}  # noqa: E731
    endpoint.register_client_auth(TlsClientAuth(lambda: {ca.trust_domain: ca.x509_bundle()}, clock=clock))
    endpoint.register_grant(
        TokenExchangeGrant(jwt_bundles=jwt_bundles, audience=ISSUER, memo=ValidatedSvidCache(), clock=clock)
    )
    endpoint.register_grant(ClientCredentialsGrant())
    endpoint.register_assertion(JwtSpiffeAuth(issuer=ISSUER, jwt_bundles=jwt_bundles, policy_store=policy,
                                              replay=cache, drift=drift, clock=clock))  # fmt: skip
    endpoint.register_assertion(JwtBearerAuth(issuer=ISSUER, clients=registry, keys=keys, replay=cache,
                                              drift=drift, clock=clock))  # fmt: skip
    return Service(endpoint, ca, key_store, audit, clock, cache, drift, registry, keys, nonces, policy)
