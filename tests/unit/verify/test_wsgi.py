"""Tests for broker.verify.wsgi with a real Flask app: its test client, and Werkzeug's real TLS server."""

from __future__ import annotations

import asyncio
import http.client
import logging
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask, jsonify, request
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from broker._loop import LoopThread
from broker.devtools.devca import DevCA
from broker.errors import InvalidTokenError
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.context import client_ssl_context, server_ssl_context
from broker.verify import AccessTokenVerifier, VerifiedToken
from broker.verify.feed import RevocationFeedStaleError
from broker.verify.wsgi import (
    BearerAuthMiddleware,
    CertificateSource,
    forwarded_client_certificate,
    server_client_certificate,
    verified_token,
)
from tests.unit.verify.verify_helpers import Signer, claims_for


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    with LoopThread() as running:
        yield running


def make_app(verifier: Any, loop: LoopThread, source: CertificateSource = server_client_certificate) -> Flask:
    app = Flask(__name__)

    @app.get("/whoami")
    def whoami() -> Any:
        token = verified_token(request.environ)
        return jsonify(sub=str(token.spiffe_id), scope=token.scope)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(ok=True)

    # Flask annotates its environ as a dict, the middleware's WSGIApp as a MutableMapping (PEP 3333 says dict).
    app.wsgi_app = BearerAuthMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,  # type: ignore[arg-type]
        verifier=verifier,
        loop=loop,
        client_certificate=source,
        timeout=2.0,
    )
    return app


def client_with(app: Flask, **environ: Any) -> FlaskClient:
    client = app.test_client()
    client.environ_base.update(environ)
    return client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_bound_to_ssl_client_cert_reaches_the_view(
    verifier: AccessTokenVerifier, loop: LoopThread, signer: Signer, cert_der: bytes
) -> None:
    client = client_with(make_app(verifier, loop), SSL_CLIENT_CERT=ssl.DER_cert_to_PEM_cert(cert_der))
    response = client.get("/whoami", headers=bearer(signer.sign(claims_for(cert_der))))
    assert response.status_code == 200
    assert response.json == {"sub": "spiffe://example.org/ns/shop/sa/web", "scope": "orders:read orders:write"}


def test_token_bound_to_another_certificate_gets_401_invalid_token(
    verifier: AccessTokenVerifier, loop: LoopThread, signer: Signer, cert_der: bytes, other_cert_der: bytes
) -> None:
    token = signer.sign(claims_for(cert_der))
    client = client_with(make_app(verifier, loop), SSL_CLIENT_CERT=ssl.DER_cert_to_PEM_cert(other_cert_der))
    response = client.get("/whoami", headers=bearer(token))
    assert response.status_code == 401
    assert response.json is not None and response.json["error"] == "invalid_token"
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert token not in response.text


def test_bound_token_without_any_client_certificate_fails_closed(
    verifier: AccessTokenVerifier, loop: LoopThread, signer: Signer, cert_der: bytes
) -> None:
    response = make_app(verifier, loop).test_client().get("/whoami", headers=bearer(signer.sign(claims_for(cert_der))))
    assert response.status_code == 401


class FakeGunicornSocket:
    def __init__(self, der: bytes | None) -> None:
        self.der = der

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        assert binary_form
        return self.der


def test_certificate_from_gunicorns_tls_socket_is_used(
    verifier: AccessTokenVerifier, loop: LoopThread, signer: Signer, cert_der: bytes
) -> None:
    client = client_with(make_app(verifier, loop), **{"gunicorn.socket": FakeGunicornSocket(cert_der)})
    assert client.get("/whoami", headers=bearer(signer.sign(claims_for(cert_der)))).status_code == 200


def test_request_header_named_like_the_environ_key_is_not_a_certificate(
    verifier: AccessTokenVerifier, loop: LoopThread, signer: Signer, cert_der: bytes
) -> None:
    one_line = ssl.DER_cert_to_PEM_cert(cert_der).replace("\n", " ")
    headers = {**bearer(signer.sign(claims_for(cert_der))), "SSL-Client-Cert": one_line}  # -> HTTP_SSL_CLIENT_CERT
    assert make_app(verifier, loop).test_client().get("/whoami", headers=headers).status_code == 401


@pytest.mark.parametrize(("peer", "status"), [("127.0.0.1", 200), ("192.0.2.7", 401)], ids=["proxy", "stranger"])
def test_forwarded_certificate_is_used_only_from_a_trusted_proxy(
    verifier: AccessTokenVerifier, loop: LoopThread, signer: Signer, cert_der: bytes, peer: str, status: int
) -> None:
    app = make_app(verifier, loop, forwarded_client_certificate(["127.0.0.1/32"]))
    xfcc = f'Cert="{urllib.parse.quote(ssl.DER_cert_to_PEM_cert(cert_der), safe="")}"'
    headers = {**bearer(signer.sign(claims_for(cert_der))), "X-Forwarded-Client-Cert": xfcc}
    assert client_with(app, REMOTE_ADDR=peer).get("/whoami", headers=headers).status_code == status


def test_repeated_authorization_headers_are_400(verifier: AccessTokenVerifier, loop: LoopThread) -> None:
    client = make_app(verifier, loop).test_client()
    response = client.get("/whoami", headers=[("Authorization", "Bearer a"), ("Authorization", "Bearer b")])
    assert response.status_code == 400


class HangingVerifier:
    async def verify(self, token: str, client_cert_der: bytes | None) -> VerifiedToken:
        await asyncio.Event().wait()
        raise InvalidTokenError("unreachable")


def test_verification_that_does_not_finish_is_503_not_a_hang(loop: LoopThread, cert_der: bytes) -> None:
    app = make_app(HangingVerifier(), loop)
    app.wsgi_app._timeout = 0.2  # type: ignore[attr-defined]
    response = client_with(app, SSL_CLIENT_CERT=ssl.DER_cert_to_PEM_cert(cert_der)).get("/whoami", headers=bearer("x"))
    assert response.status_code == 503
    assert response.json is not None and response.json["error"] == "temporarily_unavailable"


def test_real_werkzeug_tls_server_hands_the_client_certificate_to_the_middleware(
    verifier: AccessTokenVerifier, loop: LoopThread, signer: Signer
) -> None:
    """End to end over real mTLS: Werkzeug puts the peer certificate in SSL_CLIENT_CERT; a mismatch is 401."""
    ca = DevCA.ephemeral("example.org")
    server_source = InMemorySvidSource(ca, SpiffeId.parse("spiffe://example.org/api"))
    own = InMemorySvidSource(ca, SpiffeId.parse("spiffe://example.org/ns/shop/sa/web"))
    other = InMemorySvidSource(ca, SpiffeId.parse("spiffe://example.org/ns/shop/sa/other"))
    server = make_server("127.0.0.1", 0, make_app(verifier, loop), ssl_context=server_ssl_context(server_source))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        token = signer.sign(claims_for(own.x509_svid().leaf.public_bytes(Encoding.DER)))
        assert _get(server.port, client_ssl_context(own, server_id=None), token) == 200
        assert _get(server.port, client_ssl_context(other, server_id=None), token) == 401
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _get(port: int, context: ssl.SSLContext, token: str) -> int:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        connection.request("GET", "/whoami", headers=bearer(token))
        return connection.getresponse().status
    finally:
        connection.close()


CANARY = "CANARY-path-5e1d"


def test_a_refused_request_logs_its_method_but_never_its_path(
    verifier: AccessTokenVerifier, loop: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = make_app(verifier, loop).test_client().get(f"/whoami/{CANARY}?t={CANARY}")
    assert response.status_code == 401
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("broker"))  # not the test client's
    assert "GET request refused" in ours
    assert CANARY not in ours


def test_forwarded_certificate_from_an_untrusted_peer_is_noted_at_debug(
    verifier: AccessTokenVerifier, loop: LoopThread, signer: Signer, cert_der: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(verifier, loop, forwarded_client_certificate(["127.0.0.1/32"]))
    xfcc = f'Cert="{urllib.parse.quote(ssl.DER_cert_to_PEM_cert(cert_der), safe="")}"'
    with caplog.at_level(logging.DEBUG, logger="broker.verify"):
        client_with(app, REMOTE_ADDR="192.0.2.7").get(
            "/whoami", headers={**bearer(signer.sign(claims_for(cert_der))), "X-Forwarded-Client-Cert": xfcc}
        )
    noted = [r for r in caplog.records if "x-forwarded-client-cert" in r.getMessage()]
    assert [r.levelno for r in noted] == [logging.DEBUG]


class StaleFeedVerifier:
    async def verify(self, token: str, client_cert_der: bytes | None) -> Any:
        raise RevocationFeedStaleError()


def test_a_stale_revocation_feed_that_fails_closed_is_503_with_retry_after(loop: LoopThread) -> None:
    response = make_app(StaleFeedVerifier(), loop).test_client().get("/whoami", headers=bearer("abc"))

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.get_json()["error"] == "temporarily_unavailable"
