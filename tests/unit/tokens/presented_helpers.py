"""Fakes of :mod:`broker.tokens.presented` for the RFC 7009 and RFC 7662 endpoint tests: tokens known by value,
and a revocation view that records what it was asked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from broker.devtools.devca import DevCA
from broker.identity.spiffeid import SpiffeId
from broker.tokens.client_auth.mtls import TlsClientAuth
from broker.tokens.endpoint import TokenEndpoint
from broker.tokens.issuer import AccessTokenIssuer, AuthenticatedClient
from broker.tokens.keys import InMemoryKeyStore
from broker.tokens.policy import InMemoryPolicyStore, parse_policy
from broker.tokens.presented import CheckedToken
from tests.unit.tokens.endpoint_helpers import API, ISSUER, POLICY

WEB = "spiffe://example.org/ns/shop/sa/web"
RS = "spiffe://example.org/ns/shop/sa/orders-api"
ADMIN = "spiffe://example.org/ops/admin"
NOW = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


def client(spiffe_id: str) -> AuthenticatedClient:
    svid = DevCA.ephemeral("example.org").issue_x509_svid(SpiffeId.parse(spiffe_id), ttl=3600)
    return AuthenticatedClient(spiffe_id=svid.spiffe_id, leaf=svid.leaf)


def client_auth() -> TokenEndpoint:
    """A token endpoint used only for its client-authentication registry (``tls_client_auth``)."""
    endpoint = TokenEndpoint(
        issuer=AccessTokenIssuer(issuer=ISSUER, key_store=InMemoryKeyStore()),
        policy_store=InMemoryPolicyStore(parse_policy(POLICY)),
    )
    endpoint.register_client_auth(TlsClientAuth(lambda: {}))
    return endpoint


def checked(jti: str = "j1", subject: str = WEB, audience: str = API, **extra: Any) -> CheckedToken:
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "client_id": subject,
        "aud": audience,
        "iat": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 60,
        "jti": jti,
        "cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"},
        **extra,
    }
    return CheckedToken(jti, "k1", subject, (audience,), NOW, NOW + timedelta(seconds=60), claims)


class KnownTokens:
    """:class:`~broker.tokens.presented.TokenCheck` over a dict: a token string -> what it verified as."""

    def __init__(self, **tokens: CheckedToken) -> None:
        self.tokens = tokens
        self.checked: list[str] = []

    async def check(self, token: str) -> CheckedToken | None:
        self.checked.append(token)
        return self.tokens.get(token)


class RecordingRevocations:
    """:class:`~broker.tokens.presented.Revocations` that cuts off the ``jti``s in ``cut_off``."""

    def __init__(self, *cut_off: str) -> None:
        self.cut_off = set(cut_off)
        self.catch_ups = 0
        self.revoked: list[str] = []

    async def catch_up(self) -> None:
        self.catch_ups += 1

    def refusal(self, token: CheckedToken) -> str | None:
        return "revoked" if token.jti in self.cut_off else None

    async def revoke(self, token: CheckedToken) -> bool:
        if token.jti in self.cut_off:
            return False
        self.cut_off.add(token.jti)
        self.revoked.append(token.jti)
        return True
