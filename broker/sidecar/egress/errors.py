"""What the egress proxy answers an app instead of forwarding its request, drawn once::

    OAuthError (broker.errors)
    └── EgressError                         the egress proxy's refusals; ``reason`` is the report's refusal reason
        ├── EgressRequestError              400 invalid_request: not a request the proxy can forward safely
        ├── TargetNotCoveredError           403 target_not_covered: no usable exception covers the target
        ├── PlaceholderToOtherTargetError   403 placeholder_to_other_target: a placeholder sent to a target its
        │                                       exception does not cover (possible exfiltration attempt)
        ├── NotGrantedError                 403 not_granted: the token service refused the grant, or the exception
        │                                       was withdrawn (revocation feed), or this workload is quarantined
        ├── ConnectNotSupportedError        405 connect_not_supported: CONNECT (a TLS tunnel cannot be injected into)
        ├── MethodNotAllowedError           405 method_not_allowed: TRACE (the target would reflect the key back)
        ├── TargetCertificateError          502 target_certificate: the target's TLS certificate did not verify
        ├── BadGatewayError                 502 bad_gateway: the target could not be reached or broke the exchange
        ├── GatewayTimeoutError             504 gateway_timeout: the target did not answer in time
        └── EgressUnavailableError          503 temporarily_unavailable: the token service is unreachable and no
                                                granted secret is held (or the catalog was never fetched)

Descriptions name the exception and the target's origin, never a secret, a header value or a query string: they
go into the app's response body and the sidecar's log as they are.
"""

from __future__ import annotations

from broker.errors import OAuthError
from broker.sidecar.errors import safe_description

__all__ = [
    "BadGatewayError",
    "ConnectNotSupportedError",
    "EgressError",
    "EgressRequestError",
    "EgressUnavailableError",
    "GatewayTimeoutError",
    "MethodNotAllowedError",
    "NotGrantedError",
    "PlaceholderToOtherTargetError",
    "TargetCertificateError",
    "TargetNotCoveredError",
]


class EgressError(OAuthError):
    """A request the egress proxy did not forward. ``reason`` (one of :data:`~broker.apikeys.grant.REFUSAL_REASONS`)
    makes it a refusal the token service hears about in the next report; None: the app's or a network problem.
    ``key_sent``: the request, key included, may have reached the target before the failure (a use to report)."""

    reason: str | None = None

    def __init__(self, description: str, *, name: str | None = None, key_sent: bool = False) -> None:
        super().__init__(safe_description(description))
        self.name = name
        self.key_sent = key_sent


class EgressRequestError(EgressError):
    error = "invalid_request"
    status = 400


class TargetNotCoveredError(EgressError):
    error = reason = "target_not_covered"
    status = 403


class PlaceholderToOtherTargetError(EgressError):
    error = reason = "placeholder_to_other_target"
    status = 403


class NotGrantedError(EgressError):
    error = reason = "not_granted"
    status = 403


ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


class ConnectNotSupportedError(EgressError):
    error = "connect_not_supported"
    reason = "connect_tunnel"
    status = 405

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.headers["Allow"] = ALLOWED_METHODS


class MethodNotAllowedError(EgressError):
    error = "method_not_allowed"
    status = 405

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.headers["Allow"] = ALLOWED_METHODS


class TargetCertificateError(EgressError):
    error = reason = "target_certificate"
    status = 502


class BadGatewayError(EgressError):
    error = "bad_gateway"
    status = 502


class GatewayTimeoutError(EgressError):
    error = "gateway_timeout"
    status = 504


class EgressUnavailableError(EgressError):
    error = "temporarily_unavailable"
    status = 503
