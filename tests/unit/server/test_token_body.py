"""The token request body at the byte level, over real mTLS: undecodable bodies are 400, vanished clients quiet.

Before: ``Content-Encoding: deflate`` over bytes that do not inflate was a 500 ``server_error`` (aiohttp's
``RequestPayloadError`` reached the catch-all), and a client that disconnected mid-body was logged as a 500.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import zlib

import pytest

from broker.devtools.devca import DevCA
from broker.oauth.constants import GRANT_CLIENT_CREDENTIALS
from tests.unit.server.token_service_helpers import API, CLIENT_ID, Broker, client_context

FORM = f"grant_type={GRANT_CLIENT_CREDENTIALS}&audience={API}".encode()


def post(body: bytes, *headers: str, length: int | None = None) -> bytes:
    lines = ["POST /token HTTP/1.1", "Host: broker.test", "Content-Type: application/x-www-form-urlencoded", *headers]
    if not any(h.lower().startswith("transfer-encoding") for h in headers):
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def send(broker: Broker, ca: DevCA, raw: bytes, *, hang_up: bool = False) -> tuple[int, dict[str, str]]:
    """One raw request over mTLS; the status and JSON body (or (0, {}) after ``hang_up``)."""
    ctx = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.service.port, ssl=ctx)
    try:
        writer.write(raw)
        await writer.drain()
        if hang_up:
            return 0, {}
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
        return int(head.split(b" ")[1]), json.loads(body)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "raw",
    [
        post(b"\x00\x01not deflate at all", "Content-Encoding: deflate"),
        post(b"\x1f\x8b\x08garbage", "Content-Encoding: gzip"),
        post(gzip.compress(FORM), "Content-Encoding: gzip"),
        post(zlib.compress(FORM), "Content-Encoding: deflate"),
        post(b"zz\r\n" + FORM + b"\r\n0\r\n\r\n", "Transfer-Encoding: chunked"),
        post(b"5\r\ngrant_type=x" + b"\r\n0\r\n\r\n", "Transfer-Encoding: chunked"),
    ],
    ids=["deflate-junk", "gzip-junk", "gzip-valid", "deflate-valid", "chunk-size-not-hex", "chunk-longer-than-size"],
)
async def test_body_that_cannot_be_decoded_is_invalid_request(
    broker: Broker, ca: DevCA, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        status, body = await send(broker, ca, raw)
    assert status == 400 and body["error"] == "invalid_request" and "access_token" not in body
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert broker.service.issuer.issued_count == 0


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
async def test_unsupported_content_encoding_is_400_with_accept_encoding_identity(
    broker: Broker, ca: DevCA, coding: str
) -> None:
    ctx = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.service.port, ssl=ctx)
    try:
        writer.write(post(FORM, f"Content-Encoding: {coding}"))
        async with asyncio.timeout(5):
            head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
    finally:
        writer.close()
    assert head.startswith("http/1.1 400 ")
    assert "\r\naccept-encoding: identity\r\n" in head  # RFC 9110 §12.5.3, §15.5.16


async def test_client_that_disconnects_mid_body_is_not_a_server_error(
    broker: Broker, ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await send(broker, ca, post(FORM[:10], length=len(FORM)), hang_up=True)
        status, _ = await send(broker, ca, post(FORM))  # the service goes on; the vanished one is done by now
        assert status == 200
        await asyncio.wait_for(_quiet(broker), 5)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert " 500 " not in caplog.text and "server_error" not in caplog.text


async def _quiet(broker: Broker) -> None:
    """Wait until the token service holds no connection (the vanished client's handler has finished)."""
    server = broker.service.runner.server
    assert server is not None
    while server.connections:  # noqa: ASYNC110 (aiohttp offers no event for a closed connection)
        await asyncio.sleep(0.01)
