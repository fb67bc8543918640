"""Tests for broker.verify.middleware over plain HTTP (no TLS, so never a client certificate)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.errors import InvalidTokenError
from broker.verify import VERIFIED_TOKEN, AccessTokenVerifier, VerifiedToken, bearer_auth_middleware
from broker.verify.bearer import bearer_token
from tests.unit.verify.verify_helpers import Signer, claims_for

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


class RecordingVerifier:
    """Accepts any token and records what the middleware handed over."""

    def __init__(self, result: VerifiedToken | None = None) -> None:
        self.seen: list[tuple[str, bytes | None]] = []
        self.result = result

    async def verify(self, token: str, client_cert_der: bytes | None) -> VerifiedToken:
        self.seen.append((token, client_cert_der))
        if self.result is None:
            raise InvalidTokenError("refused")
        return self.result


async def whoami(request: web.Request) -> web.Response:
    return web.json_response({"sub": str(request[VERIFIED_TOKEN].spiffe_id)})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def make_app(verifier: Any) -> web.Application:
    app = web.Application(middlewares=[bearer_auth_middleware(verifier)])
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/healthz", health)
    return app


async def test_request_without_credentials_gets_a_challenge_without_error_code(
    aiohttp_client: ClientFactory, verifier: AccessTokenVerifier
) -> None:
    client = await aiohttp_client(make_app(verifier))
    response = await client.get("/whoami")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="spiffe-broker"'  # RFC 6750 §3.1
    assert (await response.json())["error"] == "invalid_token"


@pytest.mark.parametrize(
    ("authorization", "status"),
    [("Basic dXNlcjpwYXNz", 401), ("Bearer", 400), ("Bearer a b", 400), ("Bearertoken", 401)],
    ids=["basic", "empty", "space", "glued"],
)
async def test_non_bearer_or_malformed_authorization_is_refused(
    aiohttp_client: ClientFactory, authorization: str, status: int
) -> None:
    recorder = RecordingVerifier()
    client = await aiohttp_client(make_app(recorder))
    response = await client.get("/whoami", headers={"Authorization": authorization})
    assert response.status == status  # RFC 6750 §3.1: malformed Bearer is invalid_request (400)
    assert recorder.seen == []


async def test_deeply_nested_token_header_is_invalid_token_not_a_server_error(
    aiohttp_client: ClientFactory, verifier: AccessTokenVerifier
) -> None:
    import base64

    header = base64.urlsafe_b64encode(b"[" * 2500 + b"]" * 2500).rstrip(b"=").decode()
    client = await aiohttp_client(make_app(verifier))
    response = await client.get("/whoami", headers={"Authorization": f"Bearer {header}.e30.AA"})
    assert response.status == 401
    assert (await response.json())["error"] == "invalid_token"


async def test_two_authorization_headers_are_invalid_request(aiohttp_client: ClientFactory) -> None:
    recorder = RecordingVerifier()
    client = await aiohttp_client(make_app(recorder))
    headers = [("Authorization", "Bearer a"), ("Authorization", "Bearer b")]
    response = await client.get("/whoami", headers=headers)
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_request"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="spiffe-broker", error="invalid_request"'


async def test_valid_token_without_tls_client_certificate_is_invalid_token(
    aiohttp_client: ClientFactory, verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes
) -> None:
    client = await aiohttp_client(make_app(verifier))
    response = await client.get("/whoami", headers={"Authorization": f"Bearer {signer.sign(claims_for(cert_der))}"})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    body = await response.json()
    assert body["error"] == "invalid_token"
    assert "without a client certificate" in body["error_description"]
    assert response.headers["Cache-Control"] == "no-store"


async def test_accepted_token_reaches_the_handler_and_the_scheme_is_case_insensitive(
    aiohttp_client: ClientFactory,
) -> None:
    from broker.identity.spiffeid import SpiffeId

    verified = VerifiedToken(SpiffeId.parse("spiffe://example.org/x"), frozenset(), ("a",), 0.0)
    recorder = RecordingVerifier(verified)
    client = await aiohttp_client(make_app(recorder))
    response = await client.get("/whoami", headers={"Authorization": "bearer abc.def.ghi"})
    assert (response.status, await response.json()) == (200, {"sub": "spiffe://example.org/x"})
    assert recorder.seen == [("abc.def.ghi", None)]


async def test_exempt_paths_need_no_token(aiohttp_client: ClientFactory) -> None:
    recorder = RecordingVerifier()
    client = await aiohttp_client(make_app(recorder))
    assert (await client.get("/healthz")).status == 200
    assert recorder.seen == []


def test_bearer_token_accepts_b64token_characters() -> None:
    assert bearer_token(["Bearer a-b_c.d~e+f/g=="]) == "a-b_c.d~e+f/g=="
