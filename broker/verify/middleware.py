"""aiohttp middleware: require a bound access token on every request (except ``exempt`` paths).

RFC 6750 §2.1: the token arrives as ``Authorization: Bearer <token>`` (the scheme is case-insensitive, RFC 9110
§11.1); other ways of sending it are not accepted. The client certificate comes from the same TLS connection
(RFC 8705 §3). Failures are 401 with ``WWW-Authenticate``: without any credentials the challenge carries no error
code (RFC 6750 §3.1), otherwise ``error="invalid_token"``; a malformed header is 400 ``invalid_request``; a
stale revocation feed that fails closed is 503 ``temporarily_unavailable`` with ``Retry-After``.
Handlers read the result as ``request[VERIFIED_TOKEN]``.

When the verifier has a :class:`~broker.verify.dpop.DpopPolicy`, ``Authorization: DPoP <token>`` with one
``DPoP`` header proof is accepted too (RFC 9449 §7). The URI ``htu`` must match (:func:`dpop_request_uri`) is the
policy's ``origin`` if set, else ``request.scheme`` (the connection's: https on a TLS transport; aiohttp changes
it only if a middleware such as ``aiohttp_remotes`` rewrote it on purpose) with ``request.host`` (the ``Host``
header), then ``request.raw_path`` as received.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from broker.errors import OAuthError
from broker.verify.bearer import challenge, credentials
from broker.verify.dpop import DpopPolicy
from broker.verify.verifier import AccessTokenVerifier, VerifiedToken

__all__ = ["VERIFIED_TOKEN", "bearer_auth_middleware", "client_certificate_der", "dpop_request_uri"]

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


def dpop_request_uri(request: web.Request, policy: DpopPolicy) -> str:
    """The URI a DPoP proof's ``htu`` must match for ``request`` (see the module docstring)."""
    return policy.request_uri(scheme=request.scheme, host=request.host, target=request.raw_path)


async def _verify(verifier: AccessTokenVerifier, request: web.Request, dpop: DpopPolicy | None) -> VerifiedToken:
    presented = credentials(request.headers.getall(hdrs.AUTHORIZATION, []), dpop=dpop is not None)
    if dpop is not None and presented.scheme == "DPoP":
        proofs = request.headers.getall("DPoP", [])
        uri = dpop_request_uri(request, dpop)
        return await verifier.verify_dpop(presented.token, proofs=proofs, method=request.method, uri=uri)
    return await verifier.verify(presented.token, client_certificate_der(request))


def bearer_auth_middleware(
    verifier: AccessTokenVerifier, *, exempt: Collection[str] = ("/healthz", "/readyz")
) -> Middleware:
    """A middleware that verifies the access token and its binding (certificate, or DPoP key when the verifier has
    a DPoP policy) before the handler runs."""
    exempt_paths = frozenset(exempt)
    dpop: DpopPolicy | None = getattr(verifier, "dpop", None)  # a stand-in verifier may predate DPoP

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in exempt_paths:
            return await handler(request)
        try:
            request[VERIFIED_TOKEN] = await _verify(verifier, request, dpop)
        except OAuthError as exc:  # invalid_token, invalid_request; 503 while the revocation feed is stale
            log.info("%s %s: %s (%s)", request.method, request.path, exc.error, exc.description)
            status, headers, body = challenge(exc, dpop=dpop)
            return web.Response(status=status, body=body, headers=headers)
        return await handler(request)

    return middleware
