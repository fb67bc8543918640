"""ASGI middleware (Starlette, FastAPI, any ASGI 3 app): require a certificate-bound bearer token (RFC 8705 §3).

::

    app = Starlette(routes=[...], middleware=[Middleware(BearerAuthMiddleware, verifier=verifier)])
    # in a handler: verified_token(request).spiffe_id, .scopes

The token comes from ``Authorization: Bearer`` (RFC 6750 §2.1); the client certificate from ``client_certificate``,
by default :func:`tls_client_certificate` (the ASGI TLS extension). Servers differ here: uvicorn long put no
certificate in the scope, and its newer code fills ``client_cert_chain`` only where ``ssl`` has
``get_verified_chain`` (Python 3.13+). Where the server gives nothing, every bound token is refused with 401
(fail closed): check ``scope["extensions"]`` on your server, or put a TLS-terminating proxy in front and use
:func:`forwarded_client_certificate`.
Refusals are 401 ``invalid_token`` (400 ``invalid_request`` for a malformed header) with ``WWW-Authenticate``; a
WebSocket is closed before it is accepted (the server answers 403).

When the verifier has a :class:`~broker.verify.dpop.DpopPolicy`, ``Authorization: DPoP <token>`` with one ``DPoP``
header proof is accepted too (RFC 9449 §7). The URI ``htu`` must match (:func:`dpop_request_uri`) is the policy's
``origin`` if set, else ``scope["scheme"]`` (set by the server from its own connection; uvicorn rewrites it from
``X-Forwarded-Proto`` only for ``--forwarded-allow-ips``) with the ``Host`` header (else ``scope["server"]``),
then ``scope["raw_path"]`` as received (else ``root_path + path``, percent-encoded again).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping
from typing import Any
from urllib.parse import quote

from broker.errors import OAuthError, ServerError
from broker.verify.bearer import VERIFIED_TOKEN_KEY, challenge, credentials, verified_token
from broker.verify.client_cert import der_from_pem, forwarded_certificate_source
from broker.verify.dpop import DpopPolicy
from broker.verify.verifier import AccessTokenVerifier, VerifiedToken

__all__ = [
    "VERIFIED_TOKEN_KEY",
    "BearerAuthMiddleware",
    "dpop_request_uri",
    "forwarded_client_certificate",
    "tls_client_certificate",
    "verified_token",
]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
CertificateSource = Callable[[Scope], bytes | None]


def tls_client_certificate(scope: Scope) -> bytes | None:
    """The client certificate from the ASGI TLS extension, or None (no extension, no certificate, or an error)."""
    extensions = scope.get("extensions")
    tls = extensions.get("tls") if isinstance(extensions, Mapping) else None
    if not isinstance(tls, Mapping) or tls.get("client_cert_error") is not None:
        return None  # a certificate the server could not verify is no certificate
    chain = tls.get("client_cert_chain")
    if isinstance(chain, str | bytes) or not isinstance(chain, Collection) or not chain:
        return None
    return der_from_pem(next(iter(chain)))


def forwarded_client_certificate(trusted_proxies: Collection[str]) -> CertificateSource:
    """A source reading Envoy's ``x-forwarded-client-cert``, trusted only from ``trusted_proxies`` (compared with
    ``scope["client"]``, i.e. after uvicorn's ``--proxy-headers`` rewrote it)."""

    def read(scope: Scope) -> tuple[str | None, list[str]]:
        client = scope.get("client")
        peer = str(client[0]) if isinstance(client, list | tuple) and client else None
        return peer, _header_values(scope, b"x-forwarded-client-cert")

    return forwarded_certificate_source(trusted_proxies, read)


def _header_values(scope: Scope, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope.get("headers", ()) if key.lower() == name]


def dpop_request_uri(scope: Scope, policy: DpopPolicy) -> str:
    """The URI a DPoP proof's ``htu`` must match for this request (see the module docstring)."""
    hosts = _header_values(scope, b"host")
    server = scope.get("server")
    host = hosts[0] if hosts else (f"{server[0]}:{server[1]}" if isinstance(server, list | tuple) else None)
    raw_path = scope.get("raw_path")
    if isinstance(raw_path, bytes) and raw_path:
        target = raw_path.decode("latin-1")
    else:
        target = quote(f"{scope.get('root_path', '')}{scope.get('path', '/')}", safe="/:@!$&'()*+,;=~")
    return policy.request_uri(scheme=str(scope.get("scheme", "http")), host=host, target=target)


class BearerAuthMiddleware:
    """Verifies the bearer token and its certificate binding before the wrapped app sees the request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: AccessTokenVerifier,
        client_certificate: CertificateSource = tls_client_certificate,
        exempt: Collection[str] = ("/healthz", "/readyz"),
    ) -> None:
        self.app = app
        self._verifier = verifier
        self._certificate = client_certificate
        self._exempt = frozenset(exempt)
        self._dpop: DpopPolicy | None = getattr(verifier, "dpop", None)  # a stand-in verifier may predate DPoP

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in self._exempt:
            await self.app(scope, receive, send)
            return
        try:
            scope[VERIFIED_TOKEN_KEY] = await self._verify(scope)
        except OAuthError as exc:  # invalid_token, invalid_request; 503 while the revocation feed is stale
            # the method only: the path is client bytes (a token pasted into a URL would reach the log)
            log.info("%s request refused: %s (%s)", scope.get("method", "WS"), exc.error, exc.description)
            await _refuse(scope, send, exc, self._dpop)
            return
        except Exception as exc:  # a bug or an unusable JWKS: no detail to the client, no token in the log
            log.error("token verification failed unexpectedly: %s", type(exc).__name__)
            await _refuse(scope, send, ServerError())
            return
        await self.app(scope, receive, send)

    async def _verify(self, scope: Scope) -> VerifiedToken:
        presented = credentials(_header_values(scope, b"authorization"), dpop=self._dpop is not None)
        if self._dpop is not None and presented.scheme == "DPoP":
            proofs = _header_values(scope, b"dpop")
            method = str(scope.get("method", "GET"))  # a WebSocket handshake is a GET
            uri = dpop_request_uri(scope, self._dpop)
            return await self._verifier.verify_dpop(presented.token, proofs=proofs, method=method, uri=uri)
        return await self._verifier.verify(presented.token, self._certificate(scope))


async def _refuse(scope: Scope, send: Send, exc: OAuthError, dpop: DpopPolicy | None = None) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})  # before accept: the server answers HTTP 403
        return
    status, headers, body = challenge(exc, dpop=dpop)
    raw_headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    raw_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
