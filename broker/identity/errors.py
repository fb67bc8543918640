"""Errors of the identity layer (SPIFFE IDs, SVIDs, bundles, the Workload API).

Each rejection reason has its own class so callers and tests can tell them apart; ``reason`` is a stable
machine-readable code. None of them ever carries the token or key that was rejected::

    IdentityError
    ├── InvalidSpiffeIdError              malformed SPIFFE ID or trust domain (SPIFFE-ID §2)
    ├── BundleError                       malformed or missing trust bundle
    ├── X509SvidError                     X509-SVID §4-§5 violations (subclasses in x509svid.py)
    ├── JwtSvidError                      JWT-SVID §2-§4 violations (subclasses in jwtsvid.py)
    └── SvidUnavailableError              no SVID (yet, or any more) from the Workload API
"""

from __future__ import annotations

from broker.errors import BrokerError


class IdentityError(BrokerError):
    """Base of identity-layer errors."""

    error = "identity_error"
    reason: str = "identity_error"


class InvalidSpiffeIdError(IdentityError):
    """A string is not a valid SPIFFE ID or trust domain name."""

    reason = "invalid_spiffe_id"


class BundleError(IdentityError):
    """A trust bundle is malformed or missing for a trust domain."""

    reason = "bundle_error"


class X509SvidError(IdentityError):
    """An X.509 certificate chain is not a valid X509-SVID."""

    reason = "invalid_x509_svid"


class JwtSvidError(IdentityError):
    """A token is not a valid JWT-SVID."""

    reason = "invalid_jwt_svid"


class SvidUnavailableError(IdentityError):
    """No SVID is available from the configured source."""

    reason = "svid_unavailable"
    status = 503
