"""Logs of a full run: one request id across sidecar and token service, and no token, key or secret at DEBUG.

The dev stack (dev Workload API, token service, demo API, sidecar) runs with spiffe-broker's loggers and the
access log at DEBUG, written as JSON lines (:class:`broker._logging.JsonFormatter`, what ``--log-format json``
installs) into a buffer; the app gets tokens through the sidecar, calls the demo API with one, and asks for an
audience the policy refuses.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from broker._logging import REQUEST_ID_HEADER, JsonFormatter, RequestIdFilter
from broker.devtools.stack import DevStack
from broker.identity.spiffetls.connector import SpiffeTLSConnector
from broker.identity.spiffetls.context import client_ssl_context
from broker.identity.workloadapi.source import WorkloadApiSvidSource
from tests.unit.dev_stack_helpers import ask_sidecar, dev_stack, token_of

OWN_LOGGERS = ("broker", "aiohttp.access")


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    saved = [(name, logging.getLogger(name).level) for name in OWN_LOGGERS]
    root.addHandler(handler)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        for name, level in saved:
            logging.getLogger(name).setLevel(level)


@pytest.fixture
async def stack(tmp_path: Path, json_log: io.StringIO) -> AsyncIterator[DevStack]:
    async with dev_stack(tmp_path) as running:
        yield running


async def ask_with_id(stack: DevStack, audience: str, request_id: str | None = None) -> tuple[int, str]:
    return await ask_sidecar(stack, audience, {REQUEST_ID_HEADER: request_id} if request_id else None)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


async def test_one_request_id_shows_in_the_sidecar_and_the_token_service_lines(
    stack: DevStack, json_log: io.StringIO
) -> None:
    status, _ = await ask_with_id(stack, stack.demo_audience, request_id="app-req-42")
    assert status == 200

    tagged = [line for line in lines(json_log) if line.get("request_id") == "app-req-42"]
    loggers = {str(line["logger"]) for line in tagged}
    assert any(name.startswith("broker.sidecar") for name in loggers), loggers
    assert "broker.server.handlers" in loggers  # "issued token jti=..."
    assert any(line.get("route") == "/token" and line.get("status") == 200 for line in tagged)  # the access log


async def test_a_request_without_an_id_gets_a_fresh_one_shared_by_both_sides(
    stack: DevStack, json_log: io.StringIO
) -> None:
    status, _ = await ask_with_id(stack, stack.demo_audience, request_id='not a valid id; "quoted"')
    assert status == 200

    issued = [line for line in lines(json_log) if line["logger"] == "broker.server.handlers"]
    assert len(issued) == 1
    request_id = str(issued[0]["request_id"])
    assert re.fullmatch(r"[0-9a-f]{16}", request_id)  # the malformed one was replaced, not logged
    sidecar = [line for line in lines(json_log) if str(line["logger"]).startswith("broker.sidecar")]
    assert any(line.get("request_id") == request_id for line in sidecar)
    assert "not a valid id" not in json_log.getvalue()


async def secrets_of_the_run(stack: DevStack) -> list[str]:
    """What must never be logged: the access tokens, the workload's JWT-SVID, its private key."""
    found = []
    for _ in range(2):
        status, body = await ask_sidecar(stack, stack.demo_audience)
        assert status == 200
        found.append(token_of(body))
    source = WorkloadApiSvidSource(address=stack.workload_api)
    await source.start()
    try:
        await source.wait_ready(10)
        svid = source.x509_svid()
        found.append(svid.private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode())
        found.append((await source.fetch_jwt_svid(stack.issuer)).token)
        await call_demo_api(stack, source, found[0])
    finally:
        await source.aclose()
    status, _ = await ask_sidecar(stack, "spiffe://example.org/not-in-policy")
    assert status == 403
    return found


async def call_demo_api(stack: DevStack, source: WorkloadApiSvidSource, token: str) -> None:
    """The token at the demo API over mTLS with the same SVID (it verifies it, and logs what it decided)."""
    context = client_ssl_context(source, server_id=None)
    async with (
        aiohttp.ClientSession(connector=SpiffeTLSConnector(context)) as session,
        session.get(f"{stack.demo_api_url}/hello", headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        assert response.status == 200, await response.text()


SECRET_SHAPES = [
    re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),  # a JWS/JWT
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r'"d"\s*:\s*"'),  # a private JWK member
]


async def test_a_debug_run_logs_no_token_key_or_secret(stack: DevStack, json_log: io.StringIO) -> None:
    secrets = await secrets_of_the_run(stack)

    text = json_log.getvalue()
    assert len(lines(json_log)) > 10  # the run did log, at DEBUG
    for secret in secrets:
        assert secret not in text
        for piece in secret.split("."):  # nor any part of a JWS (a signature alone is a secret's worth)
            assert len(piece) < 20 or piece not in text
    for shape in SECRET_SHAPES:
        assert not shape.search(text), shape.pattern
