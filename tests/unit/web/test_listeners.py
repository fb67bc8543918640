"""Every listener of the broker runs on the hardened runner: a malformed request's bytes never come back.

The demo API here; the token service, its health port and the sidecar have their own tests
(tests/unit/server/test_token_body.py, tests/unit/sidecar/test_sidecar_sockets.py).
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest

from broker.devtools.demo_api import start_demo_api
from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.web import HardenedAppRunner

CANARY = "eyJhbGciOiJFUzI1NiJ9.CANARY-demo.sig"


async def test_demo_api_never_echoes_nor_logs_malformed_request_bytes(caplog: pytest.LogCaptureFixture) -> None:
    ca = DevCA.ephemeral("example.org")
    source = InMemorySvidSource(ca, SpiffeId.parse("spiffe://example.org/demo-api"))
    demo = await start_demo_api(
        source=source,
        issuer="https://127.0.0.1:1",  # unreachable: the best-effort JWKS fetch fails quietly
        audience="https://api.example.org",
        token_service_id=SpiffeId.parse("spiffe://example.org/spiffe-broker"),
    )
    try:
        assert isinstance(demo.runner, HardenedAppRunner)
        client = ssl.create_default_context(cadata=ca.x509_bundle().to_pem().decode())
        client.check_hostname = False
        with caplog.at_level(logging.DEBUG):
            reader, writer = await asyncio.open_connection("127.0.0.1", demo.port, ssl=client)
            writer.write(f"GET /hello HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CANARY}\x01\r\n\r\n".encode())
            async with asyncio.timeout(5):
                reply = await reader.read()
            writer.close()
    finally:
        await demo.aclose()
    assert b" 400 " in reply.split(b"\r\n")[0]
    assert CANARY.encode() not in reply and CANARY not in caplog.text
