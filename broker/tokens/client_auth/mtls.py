"""RFC 8705 §2.1 ``tls_client_auth`` with SPIFFE: the client is the SPIFFE ID of its X.509-SVID.

Checks, in the order the code runs them:

1. the request came over TLS (else ``invalid_client``: "mutual TLS with an X.509-SVID is required");
2. the peer sent a certificate (X509-SVID §5; else "no client certificate ...");
3. the certificate is an X.509-SVID of the trust domain its SPIFFE ID names, checked against that domain's bundle
   only (else "client certificate is not an acceptable X.509-SVID (<reason>)");
4. after the grant type is known: a ``client_id`` sent must equal the SPIFFE ID (RFC 8705 §2).

The peer's certificate cannot change during a TLS connection, so the chain check (a signature verification) runs
once per connection, not once per request on keep-alive connections. Every request still checks that the leaf
is within its validity period and that its trust domain's bundle is still the one it was checked against: a
bundle update re-checks the connection, fail closed.
"""

from __future__ import annotations

import ssl
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from broker.errors import InvalidClientError
from broker.identity.bundle import X509Bundle, X509BundleSet
from broker.identity.errors import X509SvidError
from broker.identity.spiffetls.context import NoPeerCertificateError, peer_spiffe_id
from broker.oauth.constants import AUTH_TLS_CLIENT_AUTH
from broker.tokens.client_auth import RequestContext
from broker.tokens.issuer import AuthenticatedClient

__all__ = ["TlsClientAuth", "verify_peer"]

_TLS = ssl.SSLObject | ssl.SSLSocket


def verify_peer(ssl_object: ssl.SSLObject | ssl.SSLSocket, bundles: X509BundleSet) -> AuthenticatedClient:
    """Checks 2 and 3 for one connection, uncached."""
    try:
        spiffe_id, leaf = peer_spiffe_id(ssl_object, bundles)
    except X509SvidError as exc:
        if isinstance(exc, NoPeerCertificateError):
            raise InvalidClientError("no client certificate: mutual TLS with an X.509-SVID is required") from None
        raise InvalidClientError(f"client certificate is not an acceptable X.509-SVID ({exc.reason})") from None
    return AuthenticatedClient(spiffe_id=spiffe_id, leaf=leaf)


@dataclass(frozen=True)
class _Verified:
    bundle: X509Bundle | None
    client: AuthenticatedClient
    not_before: float
    not_after: float


def _still_good(hit: _Verified, bundles: X509BundleSet, now: float) -> bool:
    in_validity = hit.not_before <= now <= hit.not_after
    return in_validity and bundles.get(hit.client.spiffe_id.trust_domain) == hit.bundle


class TlsClientAuth:
    """``tls_client_auth`` against the X.509 bundles ``bundles()`` returns now, memoised per TLS connection."""

    name = AUTH_TLS_CLIENT_AUTH

    def __init__(self, bundles: Callable[[], X509BundleSet], *, clock: Callable[[], float] = time.time) -> None:
        self._bundles = bundles
        self._clock = clock
        self._verified: weakref.WeakKeyDictionary[_TLS, _Verified] = weakref.WeakKeyDictionary()

    def applies(self, context: RequestContext) -> bool:
        """Any request without other credentials: a missing TLS connection or certificate is reported here."""
        return context.authorization is None

    def authenticate(self, context: RequestContext) -> AuthenticatedClient:
        ssl_object = context.tls
        if ssl_object is None:
            raise InvalidClientError("mutual TLS with an X.509-SVID is required")
        current = self._bundles()
        now = self._clock()
        hit = self._verified.get(ssl_object)
        if hit is not None and _still_good(hit, current, now):
            return hit.client
        client = verify_peer(ssl_object, current)
        leaf = client.leaf
        if leaf is None:  # verify_peer always sets it
            raise InvalidClientError("no client certificate: mutual TLS with an X.509-SVID is required")
        self._verified[ssl_object] = _Verified(
            bundle=current.get(client.spiffe_id.trust_domain),
            client=client,
            not_before=leaf.not_valid_before_utc.timestamp(),
            not_after=leaf.not_valid_after_utc.timestamp(),
        )
        return client

    def check_request(self, client: AuthenticatedClient, params: Mapping[str, str]) -> None:
        client_id = params.get("client_id")
        if client_id is not None and client_id != str(client.spiffe_id):
            raise InvalidClientError("client_id does not match the client certificate's SPIFFE ID (RFC 8705 §2)")
