"""aiohttp middleware: require a certificate-bound bearer token on every request (except ``exempt`` paths).

RFC 6750 §2.1: the token arrives as ``Authorization: Bearer <token>`` (the scheme is case-insensitive, RFC 9110
§11.1); other ways of sending it are not accepted. The client certificate comes from the same TLS connection
(RFC 8705 §3). Failures are 401 with ``WWW-Authenticate``: without any credentials the challenge carries no error
code (RFC 6750 §3.1), otherwise ``error="invalid_token"``; a malformed header is 400 ``invalid_request``; a
stale revocation feed that fails closed is 503 ``temporarily_unavailable`` with ``Retry-After``.
Handlers read the result as ``request[VERIFIED_TOKEN]``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from broker.errors import OAuthError
from broker.verify.bearer import bearer_token, challenge
from broker.verify.verifier import AccessTokenVerifier, VerifiedToken

__all__ = ["VERIFIED_TOKEN", "bearer_auth_middleware", "client_certificate_der"]

log = logging.getLogger(__name__)

VERIFIED_TOKEN = web.RequestKey("verified_token", VerifiedToken)


def client_certificate_der(request: web.Request) -> bytes | None:
    """The DER of the client certificate on this request's TLS connection, or None."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return der or None


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
            token = bearer_token(request.headers.getall(hdrs.AUTHORIZATION, []))
            request[VERIFIED_TOKEN] = await verifier.verify(token, client_certificate_der(request))
        except OAuthError as exc:  # invalid_token, invalid_request; 503 while the revocation feed is stale
            log.info("%s %s: %s (%s)", request.method, request.path, exc.error, exc.description)
            status, headers, body = challenge(exc)
            return web.Response(status=status, body=body, headers=headers)
        return await handler(request)

    return middleware
