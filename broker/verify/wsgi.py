"""WSGI middleware (Flask, Django, any PEP 3333 app): require a certificate-bound bearer token (RFC 8705 §3).

::

    loop = LoopThread()   # the verifier is async (it may fetch the JWKS): it runs on this loop
    app.wsgi_app = BearerAuthMiddleware(app.wsgi_app, verifier=verifier, loop=loop)
    # in a view: verified_token(request.environ).spiffe_id

The client certificate comes from ``client_certificate``, by default :func:`server_client_certificate`: the
server's TLS socket in ``environ["gunicorn.socket"]`` (gunicorn started with ``--certfile``, ``--keyfile``,
``--ca-certs`` and ``--cert-reqs 1`` or ``2`` so that the client is asked for one), else ``SSL_CLIENT_CERT``
(PEM: Werkzeug's development server, Apache mod_ssl with ``SSLOptions +ExportCertData``). No request header can
set either. Behind a TLS-terminating proxy use :func:`forwarded_client_certificate`. Without a certificate every
bound token is refused (fail closed). A verification that does not finish within ``timeout`` is 503.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, MutableMapping
from typing import Any, Protocol

from broker._loop import LoopThread
from broker.errors import OAuthError, ServerError, TemporarilyUnavailableError
from broker.verify.bearer import VERIFIED_TOKEN_KEY, bearer_token, challenge, verified_token
from broker.verify.client_cert import der_from_pem, forwarded_certificate_source
from broker.verify.verifier import AccessTokenVerifier, VerifiedToken

__all__ = [
    "VERIFIED_TOKEN_KEY",
    "BearerAuthMiddleware",
    "LoopThread",
    "forwarded_client_certificate",
    "server_client_certificate",
    "verified_token",
]

log = logging.getLogger(__name__)

Environ = MutableMapping[str, Any]
CertificateSource = Callable[[Environ], bytes | None]


class StartResponse(Protocol):
    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None, /) -> object: ...


WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
_REASONS = {400: "Bad Request", 401: "Unauthorized", 500: "Internal Server Error", 503: "Service Unavailable"}


def server_client_certificate(environ: Environ) -> bytes | None:
    """The client certificate from the server's TLS socket (gunicorn) or ``SSL_CLIENT_CERT``; else None."""
    sock = environ.get("gunicorn.socket")
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is not None:
        try:
            der = getpeercert(binary_form=True)
        except (ValueError, OSError):  # the handshake has not finished, or the socket is gone
            der = None
        if isinstance(der, bytes) and der:
            return der
    return der_from_pem(environ.get("SSL_CLIENT_CERT"))


def forwarded_client_certificate(trusted_proxies: Collection[str]) -> CertificateSource:
    """A source reading Envoy's ``x-forwarded-client-cert`` (``HTTP_X_FORWARDED_CLIENT_CERT``), from proxies only.

    ``trusted_proxies`` is compared with ``REMOTE_ADDR``, i.e. after any ``ProxyFix`` rewrote it. PEP 3333 joins
    repeated headers into one value with ``,``, which an XFCC element list also uses; the proxy must send exactly
    one element (``SANITIZE_SET``), so a joined value is refused like any list.
    """

    def read(environ: Environ) -> tuple[str | None, list[str]]:
        value = environ.get("HTTP_X_FORWARDED_CLIENT_CERT")
        return environ.get("REMOTE_ADDR") or None, [value] if isinstance(value, str) else []

    return forwarded_certificate_source(trusted_proxies, read)


class BearerAuthMiddleware:
    """Verifies the bearer token and its certificate binding before the wrapped app sees the request."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        verifier: AccessTokenVerifier,
        loop: LoopThread,
        client_certificate: CertificateSource = server_client_certificate,
        exempt: Collection[str] = ("/healthz", "/readyz"),
        timeout: float = 10.0,
    ) -> None:
        self.app = app
        self._verifier = verifier
        self._loop = loop
        self._certificate = client_certificate
        self._exempt = frozenset(exempt)
        self._timeout = timeout

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in self._exempt:
            return self.app(environ, start_response)
        try:
            environ[VERIFIED_TOKEN_KEY] = self._verify(environ)
        except OAuthError as exc:
            # the method only: the path is client bytes (a token pasted into a URL would reach the log)
            log.info("%s request refused: %s (%s)", environ.get("REQUEST_METHOD"), exc.error, exc.description)
            return _refuse(start_response, exc)
        return self.app(environ, start_response)

    def _verify(self, environ: Environ) -> VerifiedToken:
        authorization = environ.get("HTTP_AUTHORIZATION")
        token = bearer_token([authorization] if isinstance(authorization, str) else [])
        certificate = self._certificate(environ)
        try:
            return self._loop.run(self._verifier.verify(token, certificate), self._timeout)
        except OAuthError:  # invalid_token, invalid_request; 503 while the revocation feed is stale
            raise
        except TimeoutError:
            raise TemporarilyUnavailableError("token verification timed out") from None
        except Exception as exc:  # a bug or an unusable JWKS: no detail to the client, no token in the log
            log.error("token verification failed unexpectedly: %s", type(exc).__name__)
            raise ServerError() from None


def _refuse(start_response: StartResponse, exc: OAuthError) -> list[bytes]:
    status, headers, body = challenge(exc)
    start_response(f"{status} {_REASONS.get(status, 'Error')}", [*headers, ("Content-Length", str(len(body)))])
    return [body]
