"""End to end in one process: token service -> sidecar (Unix socket) -> demo API over mTLS.

A token fetched over the sidecar's socket is accepted by the demo API over mTLS with the same X.509-SVID; the same
token over a connection with another valid SVID, or with no client certificate, gets 401 ``invalid_token``
(RFC 8705 §3).
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.appclient.sidecar import fetch_token
from broker.devtools.demo_api import RunningDemoApi, start_demo_api
from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.connector import ServerIdentityError, SpiffeTLSConnector
from broker.identity.spiffetls.context import client_ssl_context
from broker.server.service import RunningTokenService, start_token_service
from broker.sidecar.service import RunningSidecar, start_sidecar
from broker.testing.policy import policy_rule, policy_yaml
from broker.tokens.keys import InMemoryKeyStore
from broker.tokens.policy import InMemoryPolicyStore, parse_policy

BROKER_ID = SpiffeId.parse("spiffe://example.org/spiffe-broker")
WEB_ID = SpiffeId.parse("spiffe://example.org/ns/shop/sa/web")
OTHER_ID = SpiffeId.parse("spiffe://example.org/ns/shop/sa/other")
API_ID = SpiffeId.parse("spiffe://example.org/ns/shop/sa/api")
API = "https://api.example.org"
POLICY = policy_yaml(
    policy_rule(trust_domain="example.org", path_prefix="/ns/shop", scopes=["orders:read"], max_token_lifetime=300)
)


@dataclass
class Deployment:
    ca: DevCA
    workload: InMemorySvidSource
    other: InMemorySvidSource
    token_service: RunningTokenService
    sidecar: RunningSidecar
    api: RunningDemoApi

    @property
    def hello(self) -> str:
        return f"https://127.0.0.1:{self.api.port}/hello"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def deployment(tmp_short: Path) -> AsyncIterator[Deployment]:
    ca = DevCA.ephemeral("example.org")
    port = free_port()
    issuer = f"https://127.0.0.1:{port}"
    token_service = await start_token_service(
        source=InMemorySvidSource(ca, BROKER_ID),
        policy_store=InMemoryPolicyStore(parse_policy(POLICY)),
        key_store=InMemoryKeyStore(),
        listen_host="127.0.0.1",
        listen_port=port,
        issuer=issuer,
    )
    workload = InMemorySvidSource(ca, WEB_ID)
    sidecar = await start_sidecar(
        source=workload, token_service_url=issuer, token_service_id=BROKER_ID, socket_path=tmp_short / "s.sock"
    )
    api = await start_demo_api(
        source=InMemorySvidSource(ca, API_ID), issuer=issuer, audience=API, token_service_id=BROKER_ID
    )
    yield Deployment(ca, workload, InMemorySvidSource(ca, OTHER_ID), token_service, sidecar, api)
    await api.aclose()
    await sidecar.aclose()
    await token_service.aclose()


async def call(
    url: str, token: str, ssl_context: ssl.SSLContext, connector: Any = None
) -> tuple[int, dict[str, str], Any]:
    connector = connector or aiohttp.TCPConnector(ssl=ssl_context)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        return response.status, dict(response.headers), json.loads(await response.read())


async def sidecar_token(deployment: Deployment) -> str:
    assert deployment.sidecar.socket_path is not None
    result = await fetch_token(socket_path=deployment.sidecar.socket_path, audience=API, scope="orders:read")
    return result.access_token


async def test_token_from_the_sidecar_is_accepted_over_mtls_with_the_same_svid(deployment: Deployment) -> None:
    token = await sidecar_token(deployment)
    context = client_ssl_context(deployment.workload, server_id=API_ID)
    try:
        status, _, body = await call(deployment.hello, token, context, SpiffeTLSConnector(context))
    finally:
        context.detach()
    assert (status, body) == (200, {"hello": str(WEB_ID), "scope": "orders:read"})


async def test_same_token_over_a_connection_with_another_valid_svid_is_invalid_token(deployment: Deployment) -> None:
    token = await sidecar_token(deployment)
    context = client_ssl_context(deployment.other, server_id=API_ID)
    try:
        status, headers, body = await call(deployment.hello, token, context)
    finally:
        context.detach()
    assert (status, body["error"]) == (401, "invalid_token")
    assert headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert "different client certificate" in body["error_description"]


async def test_same_token_over_a_connection_without_client_certificate_is_invalid_token(
    deployment: Deployment,
) -> None:
    token = await sidecar_token(deployment)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=deployment.ca.x509_bundle().to_pem().decode())
    status, headers, body = await call(deployment.hello, token, context)
    assert (status, body["error"]) == (401, "invalid_token")
    assert headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert "without a client certificate" in body["error_description"]


async def test_after_rotation_the_old_token_is_refused_and_the_sidecar_hands_out_a_bound_one(
    deployment: Deployment,
) -> None:
    old_token = await sidecar_token(deployment)
    deployment.workload.rotate()
    context = client_ssl_context(deployment.workload, server_id=API_ID)
    try:
        stale_status, _, _ = await call(deployment.hello, old_token, context)
        fresh_status, _, _ = await call(deployment.hello, await sidecar_token(deployment), context)
    finally:
        context.detach()
    assert (stale_status, fresh_status) == (401, 200)


async def test_connector_refuses_a_server_with_an_unexpected_spiffe_id(deployment: Deployment) -> None:
    context = client_ssl_context(deployment.workload, server_id=BROKER_ID)  # the demo API is not the broker
    try:
        with pytest.raises(ServerIdentityError, match="unexpected peer SPIFFE ID"):
            await call(deployment.hello, "token", context, SpiffeTLSConnector(context))
    finally:
        context.detach()
