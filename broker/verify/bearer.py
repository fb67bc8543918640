"""The framework-free half of a resource server's token check, shared by the aiohttp, ASGI and WSGI middleware.

* :func:`bearer_token`: RFC 6750 §2.1, the token from the one ``Authorization: Bearer`` header (the scheme is
  case-insensitive, RFC 9110 §11.1); no other way of sending it (form body, query) is accepted.
* :func:`credentials`: the same, and, when the verifier has a :class:`~broker.verify.dpop.DpopPolicy`, also
  ``Authorization: DPoP <token>`` (RFC 9449 §7.1, the same token68 syntax); the middleware then hands the
  ``DPoP`` header values to :meth:`~broker.verify.verifier.AccessTokenVerifier.verify_dpop`.
* :func:`challenge`: the 401/400 answer of RFC 6750 §3 as (status, headers, body). Without any credentials the
  ``WWW-Authenticate`` challenge carries no error code (§3.1), and a verifier that accepts DPoP offers a second
  challenge, ``DPoP realm=..., algs=...`` (RFC 9449 §7.1); otherwise ``error="invalid_token"`` or
  ``error="invalid_request"`` (``DPoP error=...`` for a request on the DPoP scheme). The body is RFC 6749
  §5.2-shaped JSON and never quotes the token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from broker.errors import InvalidRequestError, InvalidTokenError, OAuthError
from broker.oauth.response import bearer_challenge
from broker.verify.dpop import DpopPolicy
from broker.verify.verifier import VerifiedToken

__all__ = [
    "REALM",
    "VERIFIED_TOKEN_KEY",
    "Credentials",
    "MalformedBearerError",
    "MalformedDpopCredentialsError",
    "MissingTokenError",
    "bearer_token",
    "challenge",
    "credentials",
    "verified_token",
]

REALM = "spiffe-broker"
# Where the ASGI scope / WSGI environ carries the verified token (a namespaced key, as PEP 3333 asks of extensions).
VERIFIED_TOKEN_KEY = "spiffe_broker.verified_token"  # noqa: S105 - a key name, not a secret
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")  # RFC 6750 §2.1 b64token
_DPOP = re.compile(r"[Dd][Pp][Oo][Pp] +([A-Za-z0-9\-._~+/]+=*)")  # RFC 9449 §7.1: token68, as Bearer's
_MAX_AUTHORIZATION = 16384


@dataclass(frozen=True, slots=True)
class Credentials:
    """The scheme (RFC 6750 ``Bearer`` or RFC 9449 ``DPoP``) and the access token of ``Authorization``."""

    scheme: Literal["Bearer", "DPoP"]
    token: str = ""

    def __repr__(self) -> str:  # never the token
        return f"Credentials(scheme={self.scheme!r})"


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


class MalformedDpopCredentialsError(InvalidRequestError):
    """``Authorization: DPoP`` without exactly one well-formed token: 400 ``invalid_request`` (RFC 9449 §7.1)."""

    def __init__(self, description: str = "") -> None:
        super().__init__(description)
        self.headers["WWW-Authenticate"] = f'DPoP realm="{REALM}", error="invalid_request"'


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


def credentials(authorization: Sequence[str], *, dpop: bool) -> Credentials:
    """The credentials of the request's ``Authorization`` header values: :func:`bearer_token`, and with ``dpop``
    also the DPoP scheme (RFC 9449 §7.1)."""
    if dpop and len(authorization) == 1 and authorization[0].split(" ", 1)[0].lower() == "dpop":
        value = authorization[0]
        match = _DPOP.fullmatch(value) if len(value) <= _MAX_AUTHORIZATION else None
        if match is None:
            raise MalformedDpopCredentialsError("malformed DPoP credentials (RFC 9449 §7.1)")
        return Credentials("DPoP", match.group(1))
    return Credentials("Bearer", bearer_token(authorization))


def challenge(exc: OAuthError, *, dpop: DpopPolicy | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """``(status, headers, body)`` for a refused request (the one renderer, :mod:`broker.oauth.response`); with
    ``dpop``, a request without credentials is offered the DPoP challenge too (RFC 9449 §7.1)."""
    status, headers, body = bearer_challenge(exc, realm=REALM)
    if dpop is not None and isinstance(exc, MissingTokenError):
        headers.append(("WWW-Authenticate", dpop.challenge()))
    return status, headers, body


def verified_token(request: Mapping[str, Any]) -> VerifiedToken:
    """The token the middleware verified for this request: pass the ASGI scope (a Starlette ``Request`` is such
    a mapping) or the WSGI environ (Flask: ``verified_token(request.environ)``)."""
    token = request.get(VERIFIED_TOKEN_KEY)
    if not isinstance(token, VerifiedToken):
        raise LookupError("no verified token: is BearerAuthMiddleware installed for this path?")
    return token
