"""Errors the sidecar renders to its apps, as ``{"error", "error_description"}`` JSON::

BrokerError
├── InvalidRequestError          400  malformed /v1/token query or /v1/dpop-proof body (broker.errors)
│   ├── BodyTooLargeError        413  /v1/dpop-proof body over its limit
│   └── UnsupportedMediaTypeError 415 /v1/dpop-proof body not ``application/json``
├── DpopNotEnabledError          409  dpop_not_enabled: /v1/dpop-proof on a sidecar with token_binding = "mtls"
├── StaleTokenError              409  stale_token: the token is bound to a previous SVID key (RFC 9449 §6.1)
├── DpopKeyError                 500  server_error: the SVID key cannot sign DPoP proofs (key type, algorithms)
├── TokenServiceRefusedError     400  the token service said invalid_request (its code passed through)
│                                403  the token service refused by policy (invalid_target, invalid_scope,
│                                     access_denied, unauthorized_client, invalid_grant, ...; passed through)
├── WorkloadQuarantinedError     403  access_denied: the revocation feed says this workload is quarantined
├── SvidUnavailableError         503  no X.509-SVID yet (broker.identity.errors; rendered with a fixed reason)
└── TokenServiceUnavailableError 503  token service unreachable or failing after retries, and no cached token

Every 503 is ``temporarily_unavailable`` with the reason in ``error_description``; descriptions are restricted
to the RFC 6749 §5.2 character set and never carry a token or key.
"""

from __future__ import annotations

from broker.errors import AccessDeniedError, InvalidRequestError, OAuthError, ServerError, TemporarilyUnavailableError
from broker.oauth.grammar import ERROR_CODE, ERROR_DESCRIPTION

__all__ = [
    "BodyTooLargeError",
    "DpopKeyError",
    "DpopNotEnabledError",
    "StaleTokenError",
    "TokenServiceRefusedError",
    "TokenServiceUnavailableError",
    "UnsupportedMediaTypeError",
    "WorkloadQuarantinedError",
    "refusal_from_response",
    "safe_description",
]

# RFC 6749 §5.2 characters (broker.oauth.grammar); a code is at most 64 characters.
_MAX_ERROR_CODE = 64
_MAX_DESCRIPTION = 300


class TokenServiceUnavailableError(TemporarilyUnavailableError):
    """The token service could not be reached (or kept failing with 5xx) within the retry budget."""

    def __init__(self, description: str = "") -> None:
        super().__init__(safe_description(description))


class WorkloadQuarantinedError(AccessDeniedError):
    """The token service's revocation feed says this workload is quarantined: no token is served until release."""

    def __init__(self) -> None:
        super().__init__("this workload is quarantined: no access token is served until the quarantine is released")


class BodyTooLargeError(InvalidRequestError):
    """The request body is larger than the endpoint reads (RFC 9110 §15.5.14)."""

    status = 413


class UnsupportedMediaTypeError(InvalidRequestError):
    """The request body is not in the media type the endpoint reads (RFC 9110 §15.5.16)."""

    status = 415


class DpopNotEnabledError(OAuthError):
    """DPoP proofs are served only with ``token_binding = "dpop"``: this sidecar's tokens are certificate-bound."""

    error = "dpop_not_enabled"
    status = 409

    def __init__(self) -> None:
        super().__init__(
            'this sidecar binds tokens to its certificate (token_binding = "mtls"): it makes no DPoP proofs; '
            "run it with --token-binding dpop"
        )


class StaleTokenError(OAuthError):
    """The access token is bound (``cnf.jkt``, RFC 9449 §6.1) to a key the sidecar no longer holds: the X.509-SVID
    rotated. A proof with the new key would not match it; get a fresh token from ``/v1/token``."""

    error = "stale_token"
    status = 409

    def __init__(self) -> None:
        super().__init__("the access token is bound to a previous SVID key (rotated): get a fresh one from /v1/token")


class DpopKeyError(ServerError):
    """The X.509-SVID's key cannot sign DPoP proofs: an unsupported key type, or no algorithm the server takes."""

    def __init__(self, description: str) -> None:
        super().__init__(safe_description(description))


def safe_description(text: str) -> str:
    """``text`` within RFC 6749 §5.2's ``error_description`` characters (others become ``?``), at most 300 long."""
    return "".join(c if ERROR_DESCRIPTION.fullmatch(c) else "?" for c in text[:_MAX_DESCRIPTION])


class TokenServiceRefusedError(OAuthError):
    """The token service answered with an RFC 6749 §5.2 error; its code and description are passed through.

    ``invalid_request`` stays 400 (the app's request was malformed); every other refusal becomes 403: the
    request was understood and refused for this workload (policy, scope, audience, or its credentials).
    """

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(description)
        self.error = error
        self.status = 400 if error == "invalid_request" else 403


def refusal_from_response(status: int, body: object) -> TokenServiceRefusedError:
    """Build the pass-through error from a 4xx token response, sanitising what the token service sent."""
    error = body.get("error") if isinstance(body, dict) else None
    description = body.get("error_description") if isinstance(body, dict) else None
    if not isinstance(error, str) or len(error) > _MAX_ERROR_CODE or not ERROR_CODE.fullmatch(error):
        return TokenServiceRefusedError("access_denied", f"token service refused the exchange (HTTP {status})")
    if not isinstance(description, str) or not ERROR_DESCRIPTION.fullmatch(description):
        description = ""
    return TokenServiceRefusedError(error, description[:_MAX_DESCRIPTION])
