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

When the verifier has a :class:`~broker.verify.dpop.DpopPolicy`, ``Authorization: DPoP <token>`` with one ``DPoP``
header proof is accepted too (RFC 9449 §7). The URI ``htu`` must match (:func:`dpop_request_uri`) is the policy's
``origin`` if set, else ``wsgi.url_scheme`` (the server's: ``ProxyFix`` changes it only when installed on purpose)
with ``HTTP_HOST`` (else ``SERVER_NAME:SERVER_PORT``), then the raw target (gunicorn's ``RAW_URI``, else
``REQUEST_URI``, else ``SCRIPT_NAME + PATH_INFO`` percent-encoded again). PEP 3333 joins repeated headers with
``,``, which no compact JWS contains: a joined ``DPoP`` value is split back so that two proofs are refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, MutableMapping
from typing import Any, Protocol
from urllib.parse import quote

from broker._loop import LoopThread
from broker.errors import OAuthError, ServerError, TemporarilyUnavailableError
from broker.verify.bearer import VERIFIED_TOKEN_KEY, challenge, credentials, verified_token
from broker.verify.client_cert import der_from_pem, forwarded_certificate_source
from broker.verify.dpop import DpopPolicy
from broker.verify.verifier import AccessTokenVerifier, VerifiedToken

__all__ = [
    "VERIFIED_TOKEN_KEY",
    "BearerAuthMiddleware",
    "LoopThread",
    "dpop_request_uri",
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


def dpop_request_uri(environ: Environ, policy: DpopPolicy) -> str:
    """The URI a DPoP proof's ``htu`` must match for this request (see the module docstring)."""
    host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not isinstance(target, str) or not target:
        path = f"{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}".encode("latin-1", "replace")
        target = quote(path, safe="/:@!$&'()*+,;=~")
    return policy.request_uri(scheme=str(environ.get("wsgi.url_scheme", "http")), host=host, target=target)


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
        self._dpop: DpopPolicy | None = getattr(verifier, "dpop", None)  # a stand-in verifier may predate DPoP

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in self._exempt:
            return self.app(environ, start_response)
        try:
            environ[VERIFIED_TOKEN_KEY] = self._verify(environ)
        except OAuthError as exc:
            # the method only: the path is client bytes (a token pasted into a URL would reach the log)
            log.info("%s request refused: %s (%s)", environ.get("REQUEST_METHOD"), exc.error, exc.description)
            return _refuse(start_response, exc, self._dpop)
        return self.app(environ, start_response)

    def _verify(self, environ: Environ) -> VerifiedToken:
        authorization = environ.get("HTTP_AUTHORIZATION")
        presented = credentials([authorization] if isinstance(authorization, str) else [], dpop=self._dpop is not None)
        if self._dpop is not None and presented.scheme == "DPoP":
            proof = environ.get("HTTP_DPOP")
            proofs = proof.split(",") if isinstance(proof, str) else []
            method, uri = str(environ.get("REQUEST_METHOD", "GET")), dpop_request_uri(environ, self._dpop)
            verification = self._verifier.verify_dpop(presented.token, proofs=proofs, method=method, uri=uri)
        else:
            verification = self._verifier.verify(presented.token, self._certificate(environ))
        try:
            return self._loop.run(verification, self._timeout)
        except OAuthError:  # invalid_token, invalid_request; 503 while the revocation feed is stale
            raise
        except TimeoutError:
            raise TemporarilyUnavailableError("token verification timed out") from None
        except Exception as exc:  # a bug or an unusable JWKS: no detail to the client, no token in the log
            log.error("token verification failed unexpectedly: %s", type(exc).__name__)
            raise ServerError() from None


def _refuse(start_response: StartResponse, exc: OAuthError, dpop: DpopPolicy | None = None) -> list[bytes]:
    status, headers, body = challenge(exc, dpop=dpop)
    start_response(f"{status} {_REASONS.get(status, 'Error')}", [*headers, ("Content-Length", str(len(body)))])
    return [body]
