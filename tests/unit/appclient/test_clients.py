"""Tests for broker.appclient: the sidecar's answer, the token binding, and waiting out a rotation (sync, async)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from broker.appclient import AppClient, BindingMismatchError, SidecarError, SyncAppClient, fetch_token_sync
from broker.appclient.common import SidecarToken, parse_token_response, token_binding
from broker.appclient.snapshot import SnapshotSource
from broker.devtools.devca import DevCA
from broker.errors import ConfigError
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.context import server_ssl_context
from broker.identity.svid import certificate_thumbprint
from tests.unit.appclient.appclient_helpers import APP_ID, FakeSidecar, fake_token

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
    ca = DevCA.ephemeral("example.org")
    memory = InMemorySvidSource(ca, SpiffeId.parse(APP_ID))
    async with AppClient(sidecar_socket=sidecar.path, workload_api=workload_api, retire_after=0.0) as client:
        before = SnapshotSource(memory.x509_svid(), memory.x509_bundles())
        first = client._api_session(before)
        assert client._api_session(SnapshotSource(memory.x509_svid(), memory.x509_bundles())) is first
        memory.rotate()
        second = client._api_session(SnapshotSource(memory.x509_svid(), memory.x509_bundles()))
        assert second is not first and not second.closed
        await asyncio.gather(*client._retiring)
        assert first.closed
    assert second.closed


async def test_async_client_presents_the_svid_its_token_is_bound_to_when_it_rotates_before_connecting(
    workload_api: str, sidecar: FakeSidecar
) -> None:
    """Before: one shared context, reloaded in place, put the new SVID on a connection carrying the old token."""
    ca = DevCA.ephemeral("example.org")
    memory = InMemorySvidSource(ca, SpiffeId.parse(APP_ID))
    server_source = InMemorySvidSource(ca, SpiffeId.parse("spiffe://example.org/api"))
    seen: list[str] = []

    async def whoami(request: web.Request) -> web.Response:
        der = request.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)  # type: ignore[union-attr]
        seen.append(certificate_thumbprint(der))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    server_context = server_ssl_context(server_source)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with AppClient(sidecar_socket=sidecar.path, workload_api=workload_api) as client:
            client._source = memory  # type: ignore[assignment]  # the SVID source under test's control
            bound = memory.x509_svid().x5t_s256()
            sidecar.bind_to(bound)
            fetch = client._fetch

            async def fetch_then_rotate(sidecar: ClientSession, audience: str, scope: str | None) -> SidecarToken:
                token = await fetch(sidecar, audience, scope)
                memory.rotate()  # between the token and the first connection
                return token

            client._fetch = fetch_then_rotate  # type: ignore[method-assign]
            response = await client.request("GET", f"https://127.0.0.1:{port}/", audience="aud")
        assert response.status == 200
        assert memory.x509_svid().x5t_s256() != bound  # it did rotate
        assert seen == [bound]  # the leaf on the wire is the one the token's cnf.x5t#S256 names
    finally:
        await runner.cleanup()
        server_context.detach()
