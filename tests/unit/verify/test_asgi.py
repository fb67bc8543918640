"""Tests for broker.verify.asgi with a real Starlette app and its test client.

Starlette's test client has no TLS, so ``ServerTls`` plays the ASGI server's part: it puts the client certificate
into ``scope["extensions"]["tls"]`` exactly as the ASGI TLS extension says a server does.
"""

from __future__ import annotations

import logging
import ssl
import urllib.parse
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from broker.verify import AccessTokenVerifier
from broker.verify.asgi import (
    BearerAuthMiddleware,
    CertificateSource,
    forwarded_client_certificate,
    tls_client_certificate,
    verified_token,
)
from broker.verify.feed import RevocationFeedStaleError
from tests.unit.verify.verify_helpers import Signer, claims_for


async def whoami(request: Request) -> JSONResponse:
    token = verified_token(request)
    return JSONResponse({"sub": str(token.spiffe_id), "scope": token.scope})


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(str(verified_token(websocket).spiffe_id))
    await websocket.close()


class ServerTls:
    """What a TLS-terminating ASGI server adds to the scope (ASGI TLS extension 0.2)."""

    def __init__(self, app: Any, tls: dict[str, Any] | None) -> None:
        self.app, self.tls = app, tls

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.tls is not None:
            scope["extensions"] = {**scope.get("extensions", {}), "tls": self.tls}
        await self.app(scope, receive, send)


def make_client(
    verifier: AccessTokenVerifier,
    tls: dict[str, Any] | None,
    *,
    source: CertificateSource = tls_client_certificate,
    client: tuple[str, int] = ("127.0.0.1", 50000),
) -> TestClient:
    routes = [Route("/whoami", whoami), Route("/healthz", healthz), WebSocketRoute("/ws", echo)]
    middleware = [Middleware(BearerAuthMiddleware, verifier=verifier, client_certificate=source)]
    app = Starlette(routes=routes, middleware=middleware)
    return TestClient(ServerTls(app, tls), client=client)


def tls_with(*ders: bytes, error: str | None = None) -> dict[str, Any]:
    chain = [ssl.DER_cert_to_PEM_cert(der) for der in ders]
    return {"server_cert": None, "client_cert_chain": chain, "client_cert_error": error, "tls_version": 0x0304}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_bound_to_the_presented_certificate_reaches_the_handler(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes
) -> None:
    token = signer.sign(claims_for(cert_der))
    response = make_client(verifier, tls_with(cert_der)).get("/whoami", headers=bearer(token))
    assert response.status_code == 200
    assert response.json() == {"sub": "spiffe://example.org/ns/shop/sa/web", "scope": "orders:read orders:write"}


def test_token_bound_to_another_certificate_gets_401_invalid_token(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes, other_cert_der: bytes
) -> None:
    token = signer.sign(claims_for(cert_der))
    response = make_client(verifier, tls_with(other_cert_der)).get("/whoami", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert token not in response.text


@pytest.mark.parametrize(
    "tls",
    [None, {"server_cert": None, "client_cert_chain": [], "tls_version": 0x0304}, "error"],
    ids=["server-without-tls-extension", "no-client-certificate", "certificate-the-server-could-not-verify"],
)
def test_bound_token_without_a_usable_certificate_fails_closed(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes, tls: Any
) -> None:
    extension = tls_with(cert_der, error="unable to get local issuer certificate") if tls == "error" else tls
    response = make_client(verifier, extension).get("/whoami", headers=bearer(signer.sign(claims_for(cert_der))))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_request_without_credentials_gets_a_challenge_without_error_code(
    verifier: AccessTokenVerifier, cert_der: bytes
) -> None:
    response = make_client(verifier, tls_with(cert_der)).get("/whoami")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="spiffe-broker"'  # RFC 6750 §3.1


def test_malformed_bearer_header_is_400_invalid_request(verifier: AccessTokenVerifier, cert_der: bytes) -> None:
    response = make_client(verifier, tls_with(cert_der)).get("/whoami", headers={"Authorization": "Bearer a b"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


def test_exempt_path_needs_no_token(verifier: AccessTokenVerifier) -> None:
    assert make_client(verifier, None).get("/healthz").status_code == 200


def test_websocket_with_bound_token_is_accepted_and_without_is_closed_before_accept(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes, other_cert_der: bytes
) -> None:
    token = signer.sign(claims_for(cert_der))
    with make_client(verifier, tls_with(cert_der)).websocket_connect("/ws", headers=bearer(token)) as ws:
        assert ws.receive_text() == "spiffe://example.org/ns/shop/sa/web"
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        make_client(verifier, tls_with(other_cert_der)).websocket_connect("/ws", headers=bearer(token)),
    ):
        pass
    assert refused.value.code == 1008


def _xfcc(der: bytes, **extra: str) -> str:
    pem = urllib.parse.quote(ssl.DER_cert_to_PEM_cert(der), safe="")
    fields = [f"{key}={value}" for key, value in extra.items()]
    return ";".join(["By=spiffe://example.org/api", *fields, f'Cert="{pem}"'])


def test_forwarded_certificate_from_a_trusted_proxy_is_used(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes
) -> None:
    client = make_client(verifier, None, source=forwarded_client_certificate(["127.0.0.1"]))
    headers = {**bearer(signer.sign(claims_for(cert_der))), "x-forwarded-client-cert": _xfcc(cert_der)}
    assert client.get("/whoami", headers=headers).status_code == 200


def test_forwarded_certificate_from_an_untrusted_peer_is_ignored(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes
) -> None:
    source = forwarded_client_certificate(["10.0.0.0/8"])
    client = make_client(verifier, None, source=source, client=("192.0.2.7", 50000))
    headers = {**bearer(signer.sign(claims_for(cert_der))), "x-forwarded-client-cert": _xfcc(cert_der)}
    response = client.get("/whoami", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_verified_token_outside_the_middleware_is_a_lookup_error() -> None:
    with pytest.raises(LookupError):
        verified_token({})


CANARY = "CANARY-path-5e1d"


def test_a_refused_request_logs_its_method_but_never_its_path(
    verifier: AccessTokenVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = make_client(verifier, None).get(f"/whoami/{CANARY}?t={CANARY}", headers=bearer("not.a.jwt"))
    assert response.status_code == 401
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("broker"))  # not the test client's
    assert "GET request refused" in ours
    assert CANARY not in ours


def test_forwarded_certificate_from_an_untrusted_peer_is_noted_at_debug(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(verifier, None, source=forwarded_client_certificate(["10.0.0.0/8"]), client=("192.0.2.7", 1))
    headers = {**bearer(signer.sign(claims_for(cert_der))), "x-forwarded-client-cert": _xfcc(cert_der)}
    with caplog.at_level(logging.DEBUG, logger="broker.verify"):
        assert client.get("/whoami", headers=headers).status_code == 401
    noted = [r for r in caplog.records if "x-forwarded-client-cert" in r.getMessage()]
    assert [r.levelno for r in noted] == [logging.DEBUG] and "192.0.2.7" in noted[0].getMessage()


class StaleFeedVerifier:
    async def verify(self, token: str, client_cert_der: bytes | None) -> Any:
        raise RevocationFeedStaleError()


def test_a_stale_revocation_feed_that_fails_closed_is_503_with_retry_after() -> None:
    verifier: Any = StaleFeedVerifier()
    response = make_client(verifier, None).get("/whoami", headers=bearer("abc"))

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"] == "temporarily_unavailable"
