"""Errors the sidecar renders to its apps, as ``{"error", "error_description"}`` JSON::

BrokerError
├── InvalidRequestError          400  malformed /v1/token query (broker.errors)
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

from broker.errors import AccessDeniedError, OAuthError, TemporarilyUnavailableError
from broker.oauth.grammar import ERROR_CODE, ERROR_DESCRIPTION

__all__ = [
    "TokenServiceRefusedError",
    "TokenServiceUnavailableError",
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
