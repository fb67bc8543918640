"""The whole idea, end to end, with `spiffe-broker dev` in its own process and the clients in this one.

An SVID goes in, a certificate-bound token comes out, and the demo API accepts it only from the workload whose
certificate it is bound to.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.context import client_ssl_context
from broker.identity.workloadapi.source import WorkloadApiSvidSource
from tests.devstack_process import DevProcess

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


async def sidecar_get(dev: DevProcess, path: str, **params: str) -> tuple[int, dict[str, Any]]:
    connector = aiohttp.UnixConnector(path=dev.sidecar_socket)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"http://localhost{path}", params=params) as response,
    ):
        return response.status, await response.json()


async def demo_call(token: str, ctx: ssl.SSLContext, dev: DevProcess) -> tuple[int, dict[str, Any], str]:
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{dev.demo_url}/hello", headers=headers, ssl=ctx) as response:
            return response.status, await response.json(), response.headers.get("WWW-Authenticate", "")


@pytest.fixture
async def workload(dev: DevProcess) -> AsyncIterator[WorkloadApiSvidSource]:
    """This process's own identity, from the dev Workload API (this uid is registered as the workload)."""
    source = WorkloadApiSvidSource(address=dev.workload_api)
    await source.start()
    await source.wait_ready(10.0)
    yield source
    await source.aclose()


@pytest.fixture
async def other(dev: DevProcess) -> AsyncIterator[InMemorySvidSource]:
    """Another valid SVID of the same trust domain (same CA), for a different SPIFFE ID."""
    source = InMemorySvidSource(dev.ca(), SpiffeId.parse("spiffe://example.org/other"))
    yield source
    await source.aclose()


async def test_sidecar_token_is_accepted_by_demo_api_over_mtls_with_same_svid(dev: DevProcess) -> None:
    status, body = await sidecar_get(dev, "/v1/token", audience=dev.demo_audience, scope="hello:read")
    assert status == 200, body
    assert body["token_type"] == "Bearer" and body["scope"] == "hello:read"
    env = dict(os.environ, SPIFFE_ENDPOINT_SOCKET=dev.workload_api)
    argv = [sys.executable, "-m", "broker.cli", "call", f"{dev.demo_url}/hello", "--audience", dev.demo_audience]
    argv += ["--scope", "hello:read", "--socket", dev.sidecar_socket, "--fail"]
    result = await asyncio.to_thread(subprocess.run, argv, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert '"hello": "spiffe://example.org/workload"' in result.stdout


async def test_same_token_with_another_valid_svid_gets_invalid_token(
    dev: DevProcess, workload: WorkloadApiSvidSource, other: InMemorySvidSource
) -> None:
    status, body = await sidecar_get(dev, "/v1/token", audience=dev.demo_audience)
    assert status == 200
    own = client_ssl_context(workload, server_id=None)
    assert (await demo_call(body["access_token"], own, dev))[0] == 200  # the control: the rightful holder
    status, error, challenge = await demo_call(body["access_token"], client_ssl_context(other, server_id=None), dev)
    assert (status, error["error"]) == (401, "invalid_token")
    assert 'error="invalid_token"' in challenge


async def _revoke(dev: DevProcess, token: str, ctx: ssl.SSLContext) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{dev.issuer}/revoke", data={"token": token}, ssl=ctx) as response,
    ):
        assert response.status == 200, await response.text()


async def test_a_token_revoked_by_its_holder_is_refused_by_the_demo_api_and_dropped_by_the_sidecar(
    dev: DevProcess, workload: WorkloadApiSvidSource
) -> None:
    """RFC 7009 at the token service; the demo API and the sidecar both follow the revocation feed."""
    status, body = await sidecar_get(dev, "/v1/token", audience=dev.demo_audience)
    assert status == 200
    token, own = body["access_token"], client_ssl_context(workload, server_id=None)
    assert (await demo_call(token, own, dev))[0] == 200
    await _revoke(dev, token, own)
    for _ in range(200):  # at most 2 s
        if (await demo_call(token, own, dev))[0] == 401:
            break
        await asyncio.sleep(0.01)
    status, error, _ = await demo_call(token, own, dev)
    assert (status, error["error"]) == (401, "invalid_token")
    status, fresh = await sidecar_get(dev, "/v1/token", audience=dev.demo_audience)
    assert status == 200 and fresh["access_token"] != token  # the sidecar dropped the revoked one
    assert (await demo_call(fresh["access_token"], own, dev))[0] == 200


async def test_same_token_without_client_certificate_gets_invalid_token(
    dev: DevProcess, workload: WorkloadApiSvidSource
) -> None:
    status, body = await sidecar_get(dev, "/v1/token", audience=dev.demo_audience)
    assert status == 200
    no_cert = ssl.create_default_context(cadata=dev.ca().x509_bundle().to_pem().decode())
    no_cert.check_hostname = False
    status, error, _ = await demo_call(body["access_token"], no_cert, dev)
    assert (status, error["error"]) == (401, "invalid_token")


async def _exchange(dev: DevProcess, ctx: ssl.SSLContext, subject_token: str) -> tuple[int, dict[str, Any]]:
    form = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": subject_token,
        "subject_token_type": JWT_TYPE,
        "audience": dev.demo_audience,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{dev.issuer}/token", data=form, ssl=ctx) as response,
    ):
        return response.status, await response.json()


async def test_jwt_svid_on_connection_of_another_spiffe_id_gets_invalid_grant(
    dev: DevProcess, workload: WorkloadApiSvidSource, other: InMemorySvidSource
) -> None:
    jwt_svid = await workload.fetch_jwt_svid(dev.issuer)
    status, body = await _exchange(dev, client_ssl_context(other, server_id=None), jwt_svid.token)
    assert status in (400, 401) and body["error"] in ("invalid_grant", "invalid_client"), body
    assert "access_token" not in body
    status, body = await _exchange(dev, client_ssl_context(workload, server_id=None), jwt_svid.token)
    assert status == 200 and body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"


async def test_audience_outside_policy_gets_invalid_target(dev: DevProcess) -> None:
    status, body = await sidecar_get(dev, "/v1/token", audience="https://not-in-policy.example.org")
    assert status == 403
    assert body["error"] == "invalid_target"


async def test_logs_never_contain_tokens_or_keys(dev: DevProcess, workload: WorkloadApiSvidSource) -> None:
    status, body = await sidecar_get(dev, "/v1/token", audience=dev.demo_audience, scope="hello:read")
    assert status == 200
    jwt_svid = await workload.fetch_jwt_svid(dev.issuer)
    await _exchange(dev, client_ssl_context(workload, server_id=None), jwt_svid.token)
    log = dev.stderr()
    assert "DEBUG" in log  # the dev process logs at DEBUG: the check below is not vacuous
    assert body["access_token"] not in log
    assert body["access_token"].split(".")[2] not in log
    assert jwt_svid.token.split(".")[2] not in log
    assert "PRIVATE KEY" not in log


def test_dev_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    runtime = Path(os.path.realpath("/tmp")) / f"sb-stop-{os.getpid()}"
    runtime.mkdir(mode=0o700)
    argv = [sys.executable, "-m", "broker.cli", "dev", "--state-dir", str(tmp_path), "--server-port", "0"]
    argv += ["--demo-port", "0", "--workload-api-socket", str(runtime / "a.sock"), "--sidecar-socket"]
    argv += [str(runtime / "t.sock")]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "Ctrl-C stops everything." in line:
                break
        assert (runtime / "t.sock").exists() and (runtime / "a.sock").exists()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
        assert not (runtime / "t.sock").exists() and not (runtime / "a.sock").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        for leftover in runtime.iterdir():
            leftover.unlink()
        runtime.rmdir()
