"""broker.appclient.dpop: proofs from the sidecar's ``/v1/dpop-proof`` and the two DPoP headers (RFC 9449 §7.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.appclient import (
    SidecarError,
    dpop_headers,
    dpop_request_headers,
    dpop_request_headers_sync,
    fetch_dpop_proof,
    fetch_dpop_proof_sync,
)
from broker.appclient.dpop import parse_proof_response, proof_request_body
from tests.unit.appclient.appclient_helpers import FakeSidecar

URL = "https://api.example.org/orders"


def token_answer(n: int) -> tuple[int, bytes]:
    return 200, json.dumps({"access_token": f"token-{n}", "token_type": "DPoP", "expires_in": 60}).encode()


def stale_then_proof(n: int) -> tuple[int, bytes]:
    if n == 1:
        return 409, b'{"error":"stale_token","error_description":"rotated"}'
    return 200, b'{"proof":"p.r.f"}'


def test_the_request_body_carries_only_what_was_given() -> None:
    assert json.loads(proof_request_body("GET", URL)) == {"method": "GET", "url": URL}
    full = json.loads(proof_request_body("POST", URL, "tok", "n"))
    assert full == {"method": "POST", "url": URL, "access_token": "tok", "nonce": "n"}


def test_the_two_headers_of_rfc9449() -> None:
    assert dpop_headers("tok", "p.r.f") == {"Authorization": "DPoP tok", "DPoP": "p.r.f"}


@pytest.mark.parametrize(
    ("status", "raw", "error"),
    [
        (409, b'{"error":"dpop_not_enabled","error_description":"mtls"}', "dpop_not_enabled"),
        (200, b'{"proof":""}', "error"),
        (200, b"not json", "bad_response"),
        (400, b'{"error":"invalid_request"}', "invalid_request"),
    ],
    ids=["not-enabled", "empty-proof", "not-json", "refused"],
)
def test_refusals_become_sidecar_errors(status: int, raw: bytes, error: str) -> None:
    with pytest.raises(SidecarError) as caught:
        parse_proof_response(status, raw)
    assert (caught.value.error, caught.value.status) == (error, status)


def test_sync_proof_is_a_json_post(sidecar: FakeSidecar) -> None:
    proof = fetch_dpop_proof_sync(sidecar.path, "GET", URL, access_token="tok", nonce="n-1")
    assert proof == "p.r.f"
    path, content_type, body = sidecar.posts[0]
    assert (path, content_type) == ("/v1/dpop-proof", "application/json")
    assert json.loads(body) == {"method": "GET", "url": URL, "access_token": "tok", "nonce": "n-1"}


async def test_async_proof_is_a_json_post(sidecar: FakeSidecar) -> None:
    assert await fetch_dpop_proof(socket_path=sidecar.path, method="DELETE", url=URL) == "p.r.f"
    path, content_type, body = sidecar.posts[0]
    assert (path, content_type, json.loads(body)) == ("/v1/dpop-proof", "application/json", {"method": "DELETE",
                                                                                             "url": URL})  # fmt: skip


def test_sync_headers_fetch_the_token_again_when_it_went_stale(sidecar: FakeSidecar) -> None:
    sidecar.answer, sidecar.proof_answer = token_answer, stale_then_proof
    headers = dpop_request_headers_sync(sidecar.path, "GET", URL, "https://api.example.org")
    assert headers == {"Authorization": "DPoP token-2", "DPoP": "p.r.f"}
    assert len(sidecar.queries) == 2
    assert [json.loads(body)["access_token"] for _, _, body in sidecar.posts] == ["token-1", "token-2"]


async def test_async_headers_fetch_the_token_again_when_it_went_stale(sidecar: FakeSidecar) -> None:
    sidecar.answer, sidecar.proof_answer = token_answer, stale_then_proof
    headers = await dpop_request_headers(socket_path=sidecar.path, method="GET", url=URL, audience="aud")
    assert headers == {"Authorization": "DPoP token-2", "DPoP": "p.r.f"}


def test_other_refusals_are_not_retried(sidecar: FakeSidecar) -> None:
    sidecar.answer = token_answer
    sidecar.proof_answer = lambda _n: (409, b'{"error":"dpop_not_enabled","error_description":"use dpop"}')
    with pytest.raises(SidecarError) as caught:
        dpop_request_headers_sync(sidecar.path, "GET", URL, "aud")
    assert caught.value.error == "dpop_not_enabled"
    assert len(sidecar.posts) == 1


async def test_an_absent_sidecar_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(SidecarError) as caught:
        fetch_dpop_proof_sync(tmp_path / "none.sock", "GET", URL)
    assert caught.value.error == "unreachable"
    with pytest.raises(SidecarError) as caught:
        await fetch_dpop_proof(socket_path=tmp_path / "none.sock", method="GET", url=URL)
    assert caught.value.error == "unreachable"
