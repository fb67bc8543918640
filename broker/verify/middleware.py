"""aiohttp middleware: require a certificate-bound bearer token on every request (except ``exempt`` paths).

RFC 6750 §2.1: the token arrives as ``Authorization: Bearer <token>`` (the scheme is case-insensitive, RFC 9110
§11.1); other ways of sending it are not accepted. The client certificate comes from the same TLS connection
(RFC 8705 §3). Failures are 401 with ``WWW-Authenticate``: without any credentials the challenge carries no error
code (RFC 6750 §3.1), otherwise ``error="invalid_token"``; a malformed header is 400 ``invalid_request``.
Handlers read the result as ``request[VERIFIED_TOKEN]``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDictProxy

from broker.errors import InvalidRequestError, InvalidTokenError, OAuthError
from broker.verify.verifier import AccessTokenVerifier, VerifiedToken

__all__ = ["VERIFIED_TOKEN", "bearer_auth_middleware", "bearer_token", "client_certificate_der"]

log = logging.getLogger(__name__)

VERIFIED_TOKEN = web.RequestKey("verified_token", VerifiedToken)
REALM = "spiffe-broker"
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")  # RFC 6750 §2.1 b64token


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


def bearer_token(headers: CIMultiDictProxy[str]) -> str:
    """The token from the one ``Authorization: Bearer`` header."""
    values = headers.getall(hdrs.AUTHORIZATION, [])
    if not values:
        raise MissingTokenError("an access token is required (Authorization: Bearer)")
    if len(values) > 1:
        raise InvalidRequestError("more than one Authorization header")
    match = _BEARER.fullmatch(values[0])
    if match is None:
        scheme = values[0].split(" ", 1)[0]
        if scheme.lower() == "bearer":
            raise MalformedBearerError("malformed Bearer credentials (RFC 6750 §2.1)")
        raise MissingTokenError("the Authorization header must use the Bearer scheme (RFC 6750 §2.1)")
    return match.group(1)


def client_certificate_der(request: web.Request) -> bytes | None:
    """The DER of the client certificate on this request's TLS connection, or None."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return der or None


def _challenge(exc: OAuthError) -> web.Response:
    body = json.dumps({"error": exc.error, "error_description": exc.description}).encode()
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store", **exc.headers}
    if isinstance(exc, InvalidRequestError):
        headers["WWW-Authenticate"] = 'Bearer error="invalid_request"'
    return web.Response(status=exc.status, body=body, headers=headers)


def bearer_auth_middleware(
    verifier: AccessTokenVerifier, *, exempt: Collection[str] = ("/healthz", "/readyz")
) -> Middleware:
    """A middleware that verifies the bearer token and its certificate binding before the handler runs."""
    exempt_paths = frozenset(exempt)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in exempt_paths:
            return await handler(request)
        try:
            token = bearer_token(request.headers)
            request[VERIFIED_TOKEN] = await verifier.verify(token, client_certificate_der(request))
        except (InvalidTokenError, InvalidRequestError) as exc:
            log.info("%s %s: %s (%s)", request.method, request.path, exc.error, exc.description)
            return _challenge(exc)
        return await handler(request)

    return middleware
