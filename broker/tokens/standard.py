"""The token endpoint this broker runs, composed from the registries of :mod:`broker.tokens.endpoint`.

* client authentication: RFC 8705 §2.1 ``tls_client_auth`` against the X.509 bundles (read per request);
* grants, in this order (RFC 8414 ``grant_types_supported``): RFC 8693 token exchange (JWT-SVIDs naming the issuer
  URL as audience, checked against the JWT bundles and memoised in the injected ``svid_memo``), then RFC 6749
  §4.4 ``client_credentials``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from broker.identity.bundle import JwtBundleSet, X509BundleSet
from broker.tokens.client_auth.mtls import TlsClientAuth
from broker.tokens.endpoint import Audit, TokenEndpoint
from broker.tokens.grants.client_credentials import ClientCredentialsGrant
from broker.tokens.grants.token_exchange import TokenExchangeGrant
from broker.tokens.issuer import AccessTokenIssuer
from broker.tokens.policy import PolicyStore
from broker.tokens.svid_cache import ValidatedSvidCache

__all__ = ["standard_endpoint"]


def standard_endpoint(
    *,
    issuer: AccessTokenIssuer,
    policy_store: PolicyStore,
    x509_bundles: Callable[[], X509BundleSet],
    jwt_bundles: Callable[[], JwtBundleSet],
    svid_memo: ValidatedSvidCache,
    clock: Callable[[], float] = time.time,
    audit: Audit | None = None,
) -> TokenEndpoint:
    """``tls_client_auth``; token exchange for ``issuer.issuer`` as audience, and ``client_credentials``."""
    endpoint = TokenEndpoint(issuer=issuer, policy_store=policy_store, audit=audit)
    endpoint.register_client_auth(TlsClientAuth(x509_bundles, clock=clock))
    endpoint.register_grant(
        TokenExchangeGrant(jwt_bundles=jwt_bundles, audience=issuer.issuer, memo=svid_memo, clock=clock)
    )
    endpoint.register_grant(ClientCredentialsGrant())
    return endpoint
