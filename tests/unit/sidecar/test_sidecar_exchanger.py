"""Tests for broker.sidecar.exchanger against a scripted HTTPS token endpoint (real mTLS with dev SVIDs)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.context import SourceSSLContext, server_ssl_context
from broker.jose.jws import parse_compact
from broker.sidecar.errors import TokenServiceRefusedError, TokenServiceUnavailableError, refusal_from_response
from broker.sidecar.exchanger import TokenServiceClient
from broker.sidecar.retry import RetryPolicy
from broker.sidecar.token_result import parse_token_response
from broker.verify.verifier import certificate_thumbprint
from tests.unit.sidecar.sidecar_helpers import API, BROKER_ID, free_port


@dataclass
class ScriptedTokenEndpoint:
    """Serves RFC 8414 metadata and answers POST /token from a script of (status, body) replies."""

    issuer: str
    replies: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    forms: list[dict[str, str]] = field(default_factory=list)
    client_x5ts: list[str | None] = field(default_factory=list)
    requests: int = 0
    metadata_issuer: str | None = None

    async def metadata(self, request: web.Request) -> web.Response:
        self.requests += 1
        issuer = self.metadata_issuer or self.issuer
        return web.json_response({"issuer": issuer, "token_endpoint": f"{self.issuer}/token"})

    async def token(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.forms.append(dict(await request.post()))  # type: ignore[arg-type]
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        self.client_x5ts.append(certificate_thumbprint(der) if der else None)
        status, body = self.replies.pop(0) if self.replies else (200, good_body(self.client_x5ts[-1]))
        return web.json_response(body, status=status)


def good_body(x5t: str | None, *, expires_in: int = 300) -> dict[str, Any]:
    return {
        "access_token": "header.eyJjbmYiOnt9fQ.sig" if x5t is None else fake_jwt({"cnf": {"x5t#S256": x5t}}),
        "token_type": "Bearer",
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "expires_in": expires_in,
        "scope": "orders:read",
    }


def fake_jwt(claims: dict[str, Any]) -> str:
    import base64

    def enc(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{enc({'alg': 'ES256', 'typ': 'at+jwt'})}.{enc(claims)}.c2ln"


@dataclass
class Endpoint:
    script: ScriptedTokenEndpoint
    ssl_context: SourceSSLContext
    runner: web.AppRunner


async def start_endpoint(source: InMemorySvidSource) -> Endpoint:
    port = free_port()
    script = ScriptedTokenEndpoint(issuer=f"https://127.0.0.1:{port}")
    app = web.Application()
    app.router.add_get("/.well-known/oauth-authorization-server", script.metadata)
    app.router.add_post("/token", script.token)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    ssl_context = server_ssl_context(source, require_client_cert=False)
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    return Endpoint(script, ssl_context, runner)


@pytest.fixture
async def endpoint(broker_source: InMemorySvidSource) -> AsyncIterator[Endpoint]:
    running = await start_endpoint(broker_source)
    yield running
    await running.runner.cleanup()
    running.ssl_context.detach()


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def client_for(source: InMemorySvidSource, issuer: str, sleeps: Sleeps, **kwargs: Any) -> TokenServiceClient:
    return TokenServiceClient(
        source=source,
        issuer=issuer,
        server_id=kwargs.pop("server_id", BROKER_ID),
        retry=RetryPolicy(attempts=3, base_delay=0.1, max_delay=1.0, rng=lambda: 0.5),
        sleep=sleeps,
        timeout=2.0,
        **kwargs,
    )


async def test_exchange_posts_rfc8693_form_with_a_jwt_svid_for_the_issuer(
    endpoint: Endpoint, workload_source: InMemorySvidSource
) -> None:
    client = client_for(workload_source, endpoint.script.issuer, Sleeps())
    result = await client.exchange(API, "orders:read")
    form = endpoint.script.forms[0]
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
    assert form["subject_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    assert form["requested_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert (form["audience"], form["scope"]) == (API, "orders:read")
    subject = parse_compact(form["subject_token"]).payload
    assert subject["aud"] == [endpoint.script.issuer]
    assert subject["sub"] == "spiffe://example.org/ns/shop/sa/web"
    assert result.bound_x5t == workload_source.x509_svid().x5t_s256()
    assert result.expires_in == 300
    assert client.reachable
    await client.aclose()


async def test_transient_failures_are_retried_with_backoff_then_succeed(
    endpoint: Endpoint, workload_source: InMemorySvidSource
) -> None:
    endpoint.script.replies = [(503, {"error": "temporarily_unavailable"}), (500, {})]
    sleeps = Sleeps()
    client = client_for(workload_source, endpoint.script.issuer, sleeps)
    result = await client.exchange(API, None)
    assert result.access_token
    assert len(endpoint.script.forms) == 3
    assert sleeps.delays == [pytest.approx(0.05), pytest.approx(0.1)]  # full jitter at rng=0.5: 0.5 * 0.1 * 2^n
    await client.aclose()


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ("invalid_target", 403),
        ("invalid_scope", 403),
        ("access_denied", 403),
        ("invalid_grant", 403),
        ("invalid_request", 400),
    ],
    ids=["invalid-target", "invalid-scope", "access-denied", "invalid-grant", "invalid-request"],
)
async def test_oauth_refusal_is_not_retried_and_passes_through(
    endpoint: Endpoint, workload_source: InMemorySvidSource, error: str, status: int
) -> None:
    endpoint.script.replies = [(400, {"error": error, "error_description": "policy says no"})]
    sleeps = Sleeps()
    client = client_for(workload_source, endpoint.script.issuer, sleeps)
    with pytest.raises(TokenServiceRefusedError) as caught:
        await client.exchange(API, "orders:delete")
    assert (caught.value.error, caught.value.status, caught.value.description) == (error, status, "policy says no")
    assert len(endpoint.script.forms) == 1
    assert sleeps.delays == []
    assert client.reachable
    await client.aclose()


async def test_unreachable_token_service_is_unavailable_after_every_attempt(
    workload_source: InMemorySvidSource,
) -> None:
    sleeps = Sleeps()
    client = client_for(workload_source, f"https://127.0.0.1:{free_port()}", sleeps)
    client.health.success()
    with pytest.raises(TokenServiceUnavailableError) as caught:
        await client.exchange(API, None)
    assert len(sleeps.delays) == 2
    assert not client.reachable
    assert client.health.state == "unreachable"
    assert caught.value.description.startswith("token service unreachable (3 attempts, last error: GET https://")
    await client.aclose()


async def test_server_with_another_spiffe_id_receives_no_request_at_all(
    ca: DevCA, workload_source: InMemorySvidSource
) -> None:
    impostor = InMemorySvidSource(ca, SpiffeId.parse("spiffe://example.org/impostor"))
    running = await start_endpoint(impostor)
    client = client_for(workload_source, running.script.issuer, Sleeps())
    with pytest.raises(TokenServiceUnavailableError):
        await client.exchange(API, None)
    assert running.script.requests == 0
    assert not await client.probe()
    await client.aclose()
    await running.runner.cleanup()
    running.ssl_context.detach()


async def test_after_rotation_exchanges_present_the_new_certificate(
    endpoint: Endpoint, workload_source: InMemorySvidSource
) -> None:
    client = client_for(workload_source, endpoint.script.issuer, Sleeps())
    first = await client.exchange(API, None)
    new_svid = workload_source.rotate()
    second = await client.exchange(API, None)
    assert endpoint.script.client_x5ts == [first.bound_x5t, new_svid.x5t_s256()]
    assert first.bound_x5t != second.bound_x5t == new_svid.x5t_s256()
    await client.aclose()


async def test_probe_reports_reachability_from_the_metadata(
    endpoint: Endpoint, workload_source: InMemorySvidSource
) -> None:
    client = client_for(workload_source, endpoint.script.issuer, Sleeps())
    assert not client.reachable
    assert await client.probe()
    assert client.reachable
    endpoint.script.metadata_issuer = "https://elsewhere.example"  # RFC 8414 §3.3: must not be used
    client._metadata = None
    assert not await client.probe()
    assert not client.reachable
    await client.aclose()


def test_token_response_without_expires_in_falls_back_to_the_token_exp() -> None:
    body = {"access_token": fake_jwt({"exp": 1300, "cnf": {"x5t#S256": "abc"}}), "token_type": "Bearer"}
    result = parse_token_response(body, requested_scope="a b", now=1000.0)
    assert (result.expires_in, result.bound_x5t, result.scope) == (300, "abc", "a b")


@pytest.mark.parametrize(
    "body",
    [None, {}, {"access_token": ""}, {"access_token": "opaque", "expires_in": 0}, {"access_token": "x.y.z"}],
    ids=["not-json", "empty", "empty-token", "zero-lifetime", "no-expiry-anywhere"],
)
def test_malformed_token_response_is_unavailable(body: object) -> None:
    with pytest.raises(TokenServiceUnavailableError):
        parse_token_response(body, requested_scope=None, now=1000.0)


@pytest.mark.parametrize(
    ("body", "error", "description"),
    [
        ({"error": "invalid_scope", "error_description": "nope"}, "invalid_scope", "nope"),
        ({"error": 'bad"code'}, "access_denied", "token service refused the exchange (HTTP 400)"),
        ({"error": "invalid_target", "error_description": "line\nbreak"}, "invalid_target", ""),
        ({"error": "invalid_target", "error_description": "x" * 1000}, "invalid_target", "x" * 300),
        ("not an object", "access_denied", "token service refused the exchange (HTTP 400)"),
    ],
    ids=["passed-through", "illegal-code-replaced", "illegal-description-dropped", "long-truncated", "not-json"],
)
def test_refusal_from_token_service_is_sanitised(body: object, error: str, description: str) -> None:
    refusal = refusal_from_response(400, body)
    assert (refusal.error, refusal.description) == (error, description)


def test_token_result_repr_hides_the_token() -> None:
    result = parse_token_response({"access_token": "s3cret-token", "expires_in": 60}, requested_scope=None, now=0.0)
    assert "s3cret" not in repr(result)
    assert hashlib.sha256(b"s3cret-token").hexdigest() not in repr(result)
