"""Verifying the broker's certificate-bound access tokens at a resource server.

``AccessTokenVerifier`` checks a token (signature against the issuer's JWKS found through RFC 8414 metadata,
``iss``, ``aud``, ``typ``, times, and the RFC 8705 §3 binding to the TLS client certificate);
``bearer_auth_middleware`` applies it to an aiohttp app::

    jwks = RemoteJwksProvider(issuer=ISSUER, fetch_json=HttpsJsonFetcher(source=source, server_id=BROKER_ID))
    verifier = AccessTokenVerifier(issuer=ISSUER, audience="https://api.example.org", jwks=jwks)
    app = web.Application(middlewares=[bearer_auth_middleware(verifier)])
    # in a handler: request[VERIFIED_TOKEN].spiffe_id, .scopes

To refuse revoked tokens within a second, follow the broker's revocation feed (when its metadata advertises one)
and hand the follower to the verifier; it drops revoked keys from ``jwks`` too::

    feed = RevocationFeedFollower.over_mtls(issuer=ISSUER, source=source, server_id=BROKER_ID, jwks=jwks)
    feed.start()
    verifier = AccessTokenVerifier(issuer=ISSUER, audience=..., jwks=jwks, revocations=feed)

To accept DPoP-bound tokens too (RFC 9449 §7: ``Authorization: DPoP <token>`` with a ``DPoP`` proof header, no
client certificate needed), give the verifier a policy; behind a TLS-terminating proxy name the public origin
the proofs' ``htu`` refer to (see :mod:`broker.verify.dpop`)::

    verifier = AccessTokenVerifier(..., dpop=DpopPolicy(origin="https://api.example.org"))
"""

from broker.verify.dpop import DpopPolicy
from broker.verify.feed import RevocationFeedFollower, RevocationFeedStaleError
from broker.verify.jwks import (
    HttpsJsonFetcher,
    JwksFetchError,
    JwksProvider,
    RemoteJwksProvider,
    StaticJwksProvider,
    VerificationKey,
    parse_jwks,
)
from broker.verify.middleware import VERIFIED_TOKEN, bearer_auth_middleware
from broker.verify.verifier import AccessTokenVerifier, RevocationCheck, VerifiedToken, certificate_thumbprint

__all__ = [
    "VERIFIED_TOKEN",
    "AccessTokenVerifier",
    "DpopPolicy",
    "HttpsJsonFetcher",
    "JwksFetchError",
    "JwksProvider",
    "RemoteJwksProvider",
    "RevocationCheck",
    "RevocationFeedFollower",
    "RevocationFeedStaleError",
    "StaticJwksProvider",
    "VerificationKey",
    "VerifiedToken",
    "bearer_auth_middleware",
    "certificate_thumbprint",
    "parse_jwks",
]
