"""The framework-free half of a resource server's bearer check, shared by the ASGI and WSGI middleware.

* :func:`bearer_token`: RFC 6750 §2.1, the token from the one ``Authorization: Bearer`` header (the scheme is
  case-insensitive, RFC 9110 §11.1); no other way of sending it (form body, query) is accepted.
* :func:`challenge`: the 401/400 answer of RFC 6750 §3 as (status, headers, body). Without any credentials the
  ``WWW-Authenticate`` challenge carries no error code (§3.1); otherwise ``error="invalid_token"`` or
  ``error="invalid_request"``. The body is RFC 6749 §5.2-shaped JSON and never quotes the token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from broker.errors import InvalidRequestError, InvalidTokenError, OAuthError
from broker.oauth.response import bearer_challenge
from broker.verify.verifier import VerifiedToken

__all__ = [
    "REALM",
    "VERIFIED_TOKEN_KEY",
    "MalformedBearerError",
    "MissingTokenError",
    "bearer_token",
    "challenge",
    "verified_token",
]

REALM = "spiffe-broker"
# Where the ASGI scope / WSGI environ carries the verified token (a namespaced key, as PEP 3333 asks of extensions).
VERIFIED_TOKEN_KEY = "spiffe_broker.verified_token"  # noqa: S105 - a key name, not a secret
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")  # RFC 6750 §2.1 b64token
_MAX_AUTHORIZATION = 16384


class MissingTokenError(InvalidTokenError):
    """No credentials at all: the challenge names the scheme and realm only (RFC 6750 §3.1)."""

    def __init__(self, description: str = "") -> None:
        super().__init__(description)
        self.headers["WWW-Authenticate"] = f'Bearer realm="{REALM}"'


class MalformedBearerError(InvalidRequestError):
    """``Authorization: Bearer`` without exactly one well-formed token: 400 ``invalid_request`` (RFC 6750 §3.1)."""

    def __init__(self, description: str = "") -> None:
        super().__init__(description)
        self.headers["WWW-Authenticate"] = f'Bearer realm="{REALM}", error="invalid_request"'


def bearer_token(authorization: Sequence[str]) -> str:
    """The token from the values of the request's ``Authorization`` headers (there must be exactly one)."""
    if not authorization:
        raise MissingTokenError("an access token is required (Authorization: Bearer)")
    if len(authorization) > 1:
        raise MalformedBearerError("more than one Authorization header")
    value = authorization[0]
    match = _BEARER.fullmatch(value) if len(value) <= _MAX_AUTHORIZATION else None
    if match is None:
        if value.split(" ", 1)[0].lower() == "bearer":
            raise MalformedBearerError("malformed Bearer credentials (RFC 6750 §2.1)")
        raise MissingTokenError("the Authorization header must use the Bearer scheme (RFC 6750 §2.1)")
    return match.group(1)


def challenge(exc: OAuthError) -> tuple[int, list[tuple[str, str]], bytes]:
    """``(status, headers, body)`` for a refused request (the one renderer, :mod:`broker.oauth.response`)."""
    return bearer_challenge(exc, realm=REALM)


def verified_token(request: Mapping[str, Any]) -> VerifiedToken:
    """The token the middleware verified for this request: pass the ASGI scope (a Starlette ``Request`` is such
    a mapping) or the WSGI environ (Flask: ``verified_token(request.environ)``)."""
    token = request.get(VERIFIED_TOKEN_KEY)
    if not isinstance(token, VerifiedToken):
        raise LookupError("no verified token: is BearerAuthMiddleware installed for this path?")
    return token
