"""``POST /v1/dpop-proof`` (broker.sidecar.proofs via start_sidecar) over the sidecar's real Unix socket."""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import aiohttp
import pytest

from broker.identity.memory import InMemorySvidSource
from broker.oauth.binding import Jkt
from broker.oauth.dpop import access_token_hash, check_proof
from broker.sidecar.proofs import MAX_BODY
from broker.sidecar.service import RunningSidecar
from broker.testing import FakeTokenService
from tests.unit.sidecar.dpop_helpers import sidecar_post
from tests.unit.sidecar.sidecar_helpers import Starter, sidecar_get

URL = "https://api.example.org/orders"
ALGS = ("ES256", "PS256")


def jwt_with(claims: dict[str, Any]) -> str:
    def enc(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{enc({'alg': 'ES256', 'typ': 'at+jwt'})}.{enc(claims)}.c2ln"


async def dpop_sidecar(start: Starter, source: InMemorySvidSource, **options: Any) -> RunningSidecar:
    options.setdefault("token_binding", "dpop")
    sidecar: RunningSidecar = await start(source, token_service=FakeTokenService(source), **options)
    return sidecar


def svid_jkt(source: InMemorySvidSource) -> str:
    return Jkt.of_public_key(source.x509_svid().private_key.public_key()).value


async def test_proof_is_signed_with_the_svid_key_for_the_request(
    start: Starter, workload_source: InMemorySvidSource
) -> None:
    sidecar = await dpop_sidecar(start, workload_source)
    assert sidecar.socket_path is not None
    token = jwt_with({"cnf": {"jkt": svid_jkt(workload_source)}})
    body = {"method": "PATCH", "url": URL + "?page=2", "access_token": token, "nonce": "n-1"}
    reply = await sidecar_post(sidecar.socket_path, "/v1/dpop-proof", body)
    assert reply.status == 200
    assert reply.headers["Cache-Control"] == "no-store"
    assert set(reply.body) == {"proof"}
    proof = check_proof(reply.body["proof"], htm="PATCH", htu=URL, now=time.time(), leeway=5, max_age=60,
                        algorithms=ALGS, access_token=token, nonce="n-1")  # fmt: skip
    assert proof.jkt == svid_jkt(workload_source)
    assert proof.htu == URL  # RFC 9449 §4.2: without the query


async def test_proof_without_a_token_has_no_ath_and_each_proof_is_fresh(
    start: Starter, workload_source: InMemorySvidSource
) -> None:
    sidecar = await dpop_sidecar(start, workload_source)
    assert sidecar.socket_path is not None
    first = await sidecar_post(sidecar.socket_path, "/v1/dpop-proof", {"method": "GET", "url": URL})
    second = await sidecar_post(sidecar.socket_path, "/v1/dpop-proof", {"method": "GET", "url": URL})
    proofs = [check_proof(r.body["proof"], htm="GET", htu=URL, now=time.time(), leeway=5, max_age=60,
                          algorithms=ALGS) for r in (first, second)]  # fmt: skip
    assert proofs[0].jti != proofs[1].jti


async def test_after_rotation_proofs_use_the_new_key_and_old_tokens_are_stale(
    start: Starter, workload_source: InMemorySvidSource
) -> None:
    sidecar = await dpop_sidecar(start, workload_source)
    assert sidecar.socket_path is not None
    old_token = jwt_with({"cnf": {"jkt": svid_jkt(workload_source)}})
    workload_source.rotate()
    body = {"method": "GET", "url": URL, "access_token": old_token}
    stale = await sidecar_post(sidecar.socket_path, "/v1/dpop-proof", body)
    assert (stale.status, stale.body["error"]) == (409, "stale_token")
    fresh = await sidecar_post(sidecar.socket_path, "/v1/dpop-proof", {"method": "GET", "url": URL})
    proof = check_proof(fresh.body["proof"], htm="GET", htu=URL, now=time.time(), leeway=5, max_age=60,
                        algorithms=ALGS)  # fmt: skip
    assert proof.jkt == svid_jkt(workload_source)


def too_long() -> dict[str, str]:
    return {"method": "GET", "url": "https://api.example.org/" + "a" * MAX_BODY}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ('{"method": "GET", "url": "https://a.example/"', 400, "not JSON"),
        ('["GET", "https://a.example/"]', 400, "must be a JSON object"),
        ('{"method": "GET", "url": "https://a.example/", "htu": "x"}', 400, "unknown member"),
        ('{"method": "GET", "method": "POST", "url": "https://a.example/"}', 400, "repeats a member"),
        ('{"url": "https://a.example/"}', 400, "method and url are required"),
        ('{"method": "GET", "url": 7}', 400, "must be strings"),
        ('{"method": "G T", "url": "https://a.example/"}', 400, "HTTP method name"),
        ('{"method": "", "url": "https://a.example/"}', 400, "HTTP method name"),
        ('{"method": "GET", "url": "/relative"}', 400, "absolute http(s) URL"),
        ('{"method": "GET", "url": "ftp://a.example/x"}', 400, "absolute http(s) URL"),
        ('{"method": "GET", "url": "https://a.example/x#frag"}', 400, "absolute http(s) URL"),
        ('{"method": "GET", "url": "https://user@a.example/x"}', 400, "absolute http(s) URL"),
        ('{"method": "GET", "url": "https://a.example/a b"}', 400, "absolute http(s) URL"),
        ('{"method": "GET", "url": "https://a.example/", "access_token": "a b"}', 400, "token68"),
        ('{"method": "GET", "url": "https://a.example/", "nonce": "a\\"b"}', 400, "nonce"),
        (json.dumps(too_long()), 413, "larger than"),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "unknown-member",
        "duplicate-member",
        "missing-method",
        "url-not-a-string",
        "method-with-space",
        "empty-method",
        "relative-url",
        "not-http",
        "fragment",
        "userinfo",
        "space-in-url",
        "token-not-token68",
        "nonce-with-quote",
        "body-too-large",
    ],
)
async def test_malformed_requests_are_refused(
    start: Starter, workload_source: InMemorySvidSource, body: str, status: int, words: str
) -> None:
    sidecar = await dpop_sidecar(start, workload_source)
    assert sidecar.socket_path is not None
    reply = await sidecar_post(sidecar.socket_path, "/v1/dpop-proof", None, raw=body.encode())
    assert reply.status == status
    assert reply.body["error"] == "invalid_request"
    assert words in reply.body["error_description"]


async def test_only_json_is_read(start: Starter, workload_source: InMemorySvidSource) -> None:
    sidecar = await dpop_sidecar(start, workload_source)
    assert sidecar.socket_path is not None
    body = {"method": "GET", "url": URL}
    reply = await sidecar_post(sidecar.socket_path, "/v1/dpop-proof", body, content_type="text/plain")
    assert (reply.status, reply.body["error"]) == (415, "invalid_request")


async def test_only_post_is_served(start: Starter, workload_source: InMemorySvidSource) -> None:
    sidecar = await dpop_sidecar(start, workload_source)
    connector = aiohttp.UnixConnector(path=str(sidecar.socket_path))
    async with aiohttp.ClientSession(connector=connector) as session, session.get("http://sc/v1/dpop-proof") as r:
        assert (r.status, r.headers["Allow"]) == (405, "POST")


async def test_a_certificate_binding_sidecar_makes_no_proofs(
    start: Starter, workload_source: InMemorySvidSource
) -> None:
    sidecar = await dpop_sidecar(start, workload_source, token_binding="mtls")
    assert sidecar.socket_path is not None
    reply = await sidecar_post(sidecar.socket_path, "/v1/dpop-proof", {"method": "GET", "url": URL})
    assert (reply.status, reply.body["error"]) == (409, "dpop_not_enabled")
    assert "--token-binding dpop" in reply.body["error_description"]
    assert (await sidecar_get(sidecar.socket_path, "/v1/status")).body["token_binding"] == "mtls"


async def test_status_shows_the_binding(start: Starter, workload_source: InMemorySvidSource) -> None:
    sidecar = await dpop_sidecar(start, workload_source)
    assert sidecar.socket_path is not None
    assert (await sidecar_get(sidecar.socket_path, "/v1/status")).body["token_binding"] == "dpop"


async def test_no_proof_while_quarantined_or_without_an_svid(
    start: Starter, workload_source: InMemorySvidSource
) -> None:
    sidecar = await dpop_sidecar(start, workload_source)
    assert sidecar.socket_path is not None
    sidecar.cache.suspend(float("inf"))
    reply = await sidecar_post(sidecar.socket_path, "/v1/dpop-proof", {"method": "GET", "url": URL})
    assert (reply.status, reply.body["error"]) == (403, "access_denied")
    sidecar.cache.resume()
    workload_source.set_unavailable()
    reply = await sidecar_post(sidecar.socket_path, "/v1/dpop-proof", {"method": "GET", "url": URL})
    assert (reply.status, reply.body["error"]) == (503, "temporarily_unavailable")


@pytest.mark.parametrize(
    "headers",
    [{"Host": "attacker.example"}, {"Origin": "https://attacker.example"}],
    ids=["rebound-host", "cross-site-origin"],
)
async def test_loopback_port_refuses_web_pages(
    start: Starter, workload_source: InMemorySvidSource, headers: dict[str, str]
) -> None:
    sidecar = await dpop_sidecar(start, workload_source, http_port=0)
    url = f"http://127.0.0.1:{sidecar.http_port}/v1/dpop-proof"
    async with aiohttp.ClientSession() as session, session.post(url, json={"method": "GET", "url": URL},
                                                                headers=headers) as r:  # fmt: skip
        assert (r.status, (await r.json())["error"]) == (403, "access_denied")


async def test_neither_the_token_nor_the_proof_is_logged(
    start: Starter, workload_source: InMemorySvidSource, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sidecar = await dpop_sidecar(start, workload_source)
    assert sidecar.socket_path is not None
    token = jwt_with({"sub": "secret-subject"})
    body = {"method": "GET", "url": URL, "access_token": token}
    reply = await sidecar_post(sidecar.socket_path, "/v1/dpop-proof", body)
    assert reply.status == 200
    for record in caplog.records:
        text = record.getMessage()
        assert token not in text and reply.body["proof"] not in text and access_token_hash(token) not in text
