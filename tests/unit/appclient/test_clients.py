"""Tests for broker.appclient: the sidecar's answer, the token binding, and waiting out a rotation (sync, async)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from appclient_helpers import APP_ID, FakeSidecar, fake_token

from broker.appclient import AppClient, BindingMismatchError, SidecarError, SyncAppClient, fetch_token_sync
from broker.appclient.common import parse_token_response, token_binding
from broker.errors import ConfigError

STALE = "stale-thumbprint-of-the-previous-svid"


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (fake_token("abc"), "abc"),
        (fake_token(None), None),
        ("not-a-jwt", None),
        ("a.!!!.c", None),
        ("a.bnVsbA.c", None),  # payload "null"
    ],
    ids=["bound", "no-cnf", "not-three-parts", "bad-base64", "payload-not-object"],
)
def test_token_binding_reads_cnf_x5t_or_gives_none(token: str, expected: str | None) -> None:
    assert token_binding(token) == expected


@pytest.mark.parametrize(
    ("status", "raw", "error"),
    [
        (200, b"<html>", "bad_response"),
        (200, b"[]", "bad_response"),
        (503, b'{"error":"temporarily_unavailable","error_description":"no SVID yet"}', "temporarily_unavailable"),
        (200, b'{"token_type":"Bearer"}', "error"),
    ],
    ids=["not-json", "not-an-object", "sidecar-error", "no-access-token"],
)
def test_sidecar_refusals_become_sidecar_errors_with_its_code(status: int, raw: bytes, error: str) -> None:
    with pytest.raises(SidecarError) as caught:
        parse_token_response(status, raw)
    assert (caught.value.error, caught.value.status) == (error, status)


def test_sync_fetch_asks_the_sidecar_over_its_unix_socket(sidecar: FakeSidecar) -> None:
    sidecar.bind_to("x5t")
    token = fetch_token_sync(sidecar.path, "spiffe://example.org/api", "b a")
    assert token_binding(token.access_token) == "x5t"
    assert sidecar.queries == ["/v1/token?audience=spiffe%3A%2F%2Fexample.org%2Fapi&scope=b+a"]


def test_unreachable_sidecar_is_a_sidecar_error(tmp_path: Path) -> None:
    with pytest.raises(SidecarError) as caught:
        fetch_token_sync(tmp_path / "missing.sock", "aud")
    assert caught.value.error == "unreachable"


def test_sync_client_waits_until_the_sidecar_binds_to_its_current_svid(workload_api: str, sidecar: FakeSidecar) -> None:
    with SyncAppClient(sidecar_socket=sidecar.path, workload_api=workload_api, binding_wait=5.0) as client:
        current = client.x509_svid()
        assert str(current.spiffe_id) == APP_ID
        sidecar.bind_to(STALE, STALE, current.x5t_s256())
        context, token = client.credentials("aud")
    assert token_binding(token.access_token) == current.x5t_s256()
    assert len(sidecar.queries) == 3
    assert context.verify_mode.name == "CERT_REQUIRED"


def test_sync_client_refuses_a_token_that_stays_bound_to_another_svid(workload_api: str, sidecar: FakeSidecar) -> None:
    sidecar.bind_to(STALE)
    with (
        SyncAppClient(sidecar_socket=sidecar.path, workload_api=workload_api, binding_wait=0.3) as client,
        pytest.raises(BindingMismatchError, match=r"same X\.509-SVID"),
    ):
        client.credentials("aud")


def test_sync_client_refuses_plain_http_before_asking_for_a_token(workload_api: str, sidecar: FakeSidecar) -> None:
    with (
        SyncAppClient(sidecar_socket=sidecar.path, workload_api=workload_api) as client,
        pytest.raises(ConfigError, match="https://"),
    ):
        client.request("GET", "http://api.example.org/", audience="aud")
    assert sidecar.queries == []


async def test_async_client_waits_until_the_sidecar_binds_to_its_current_svid(
    workload_api: str, sidecar: FakeSidecar
) -> None:
    async with AppClient(sidecar_socket=sidecar.path, workload_api=workload_api) as client:
        current = client.x509_svid().x5t_s256()
        sidecar.bind_to(None, STALE, current)
        token = await client.token("aud", "hello:read")
    assert token_binding(token.access_token) == current
    assert len(sidecar.queries) == 3


async def test_async_client_refuses_a_token_without_binding(workload_api: str, sidecar: FakeSidecar) -> None:
    sidecar.bind_to(None)
    async with AppClient(sidecar_socket=sidecar.path, workload_api=workload_api, binding_wait=0.3) as client:
        with pytest.raises(BindingMismatchError, match="no certificate binding"):
            await client.token("aud")


async def test_async_client_opens_new_connections_after_a_rotation_and_retires_the_old_pool(
    workload_api: str, sidecar: FakeSidecar
) -> None:
    """Pooled connections keep their certificate: a token for a new SVID must go through a new session."""
    async with AppClient(sidecar_socket=sidecar.path, workload_api=workload_api, retire_after=0.0) as client:
        first = client._api_session("x5t-before")
        assert client._api_session("x5t-before") is first
        second = client._api_session("x5t-after")
        assert second is not first and not second.closed
        await asyncio.gather(*client._retiring)
        assert first.closed
    assert second.closed
