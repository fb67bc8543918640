"""Building blocks of the token endpoint tests: the standard endpoint in process, and request forms.

Imported as ``tests.unit.tokens.endpoint_helpers`` from ``tests/unit/tokens`` and its subdirectories.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from broker.devtools.devca import DevCA
from broker.identity.bundle import JwtBundleSet
from broker.identity.spiffeid import SpiffeId
from broker.oauth.constants import GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_JWT
from broker.testing import WEB_POLICY
from broker.tokens.endpoint import TokenEndpoint
from broker.tokens.issuer import AccessTokenIssuer, AuthenticatedClient
from broker.tokens.keys import InMemoryKeyStore
from broker.tokens.policy import InMemoryPolicyStore, parse_policy
from broker.tokens.standard import standard_endpoint
from broker.tokens.svid_cache import ValidatedSvidCache

ISSUER = "https://broker.example.org:8443"
API = "https://api.example.org"
OTHER = SpiffeId.parse("spiffe://example.org/ns/shop/sa/other")
POLICY = WEB_POLICY


def make_endpoint(
    *,
    key_store: InMemoryKeyStore,
    jwt_bundles: Callable[[], JwtBundleSet],
    policy: str = POLICY,
    clock: Callable[[], float] = time.time,
    issuer_clock: Callable[[], float] = time.time,
) -> TokenEndpoint:
    """The standard endpoint (``tls_client_auth``, token exchange, ``client_credentials``) with a fresh memo."""
    return standard_endpoint(
        issuer=AccessTokenIssuer(issuer=ISSUER, key_store=key_store, clock=issuer_clock),
        policy_store=InMemoryPolicyStore(parse_policy(policy)),
        x509_bundles=lambda: {},
        jwt_bundles=jwt_bundles,
        svid_memo=ValidatedSvidCache(),
        clock=clock,
    )


def exchange_form(token: str, **extra: str | list[str]) -> dict[str, list[str]]:
    form: dict[str, Any] = {
        "grant_type": GRANT_TOKEN_EXCHANGE,
        "subject_token": token,
        "subject_token_type": TOKEN_TYPE_JWT,
        "audience": API,
        **extra,
    }
    return {k: v if isinstance(v, list) else [v] for k, v in form.items()}


def cc_form(**extra: str | list[str]) -> dict[str, list[str]]:
    form: dict[str, Any] = {"grant_type": GRANT_CLIENT_CREDENTIALS, "audience": API, **extra}
    return {k: v if isinstance(v, list) else [v] for k, v in form.items()}


def jwt_svid(ca: DevCA, client: AuthenticatedClient, **kwargs: Any) -> str:
    spiffe_id = kwargs.pop("spiffe_id", client.spiffe_id)
    audience = kwargs.pop("audience", [ISSUER])
    return ca.mint_jwt_svid(spiffe_id, audience, ttl=kwargs.pop("ttl", 300), **kwargs).token
