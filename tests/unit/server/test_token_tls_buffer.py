"""The token service as ``spiffe-broker server`` runs it, with its small TLS read buffer (``[server]
tls_read_buffer``, 17 KiB), over real mutual TLS: bodies many times the buffer arrive whole (and are refused for
their size as before), exchanges work, and a feed stream carries thousands of entries and its heartbeats.

Each test also runs with 0 (Python's 256 KiB buffer): the results must not differ."""

from __future__ import annotations

import asyncio
import json
import ssl
from asyncio import sslproto
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker._sealing import generate_kek_file
from broker.config import load_settings
from broker.devtools.devca import DevCA
from broker.events.feed import SseEvent, SseParser, parse_entry
from broker.events.revocations import TokenRevoked
from broker.identity.memory import InMemorySvidSource
from broker.oauth.constants import GRANT_CLIENT_CREDENTIALS
from broker.server.stateful_service import StatefulTokenService, start_stateful_token_service
from broker.tokens.policy import FilePolicyStore
from broker.web.tls_buffer import DEFAULT_TLS_READ_BUFFER
from tests.unit.server.token_service_helpers import API, BROKER_ID, CLIENT_ID, ISSUER, POLICY, client_context

# The buffer measured is asyncio's TLS protocol's: on asyncio's loop also when the suite runs on uvloop
# (tests/conftest.py; tests/unit/web/test_tls_buffer.py has the uvloop listener's test).
pytestmark = pytest.mark.standard_event_loop

BIG = 200 * 1024  # over the 64 KiB limit of /token, and over 11 TLS records
FORM = f"grant_type={GRANT_CLIENT_CREDENTIALS}&audience={API}"


@pytest.fixture
def ca() -> DevCA:
    return DevCA.ephemeral("example.org")


@pytest.fixture
def ctx(ca: DevCA) -> ssl.SSLContext:
    return client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)


@pytest.fixture(params=[DEFAULT_TLS_READ_BUFFER, 0], ids=["17KiB", "python-default"])
def read_buffer(request: pytest.FixtureRequest) -> int:
    """``[server] tls_read_buffer``; the size each connection gets is this, or 256 KiB for 0."""
    return int(request.param)


@pytest.fixture
async def service(read_buffer: int, ca: DevCA, tmp_path: Path) -> AsyncIterator[StatefulTokenService]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    generate_kek_file(tmp_path / "kek")
    settings = load_settings(None, {
        "state_dir": tmp_path / "state", "store": {"url": "memory:"}, "keyring": {"kek_file": tmp_path / "kek"},
        "feed": {"heartbeat": 0.05}, "server": {"tls_read_buffer": read_buffer},
    })  # fmt: skip
    running = await start_stateful_token_service(
        settings, source=InMemorySvidSource(ca, BROKER_ID), policy_store=FilePolicyStore(tmp_path / "policy.yaml"),
        issuer=ISSUER, listen_host="127.0.0.1", listen_port=0,
    )  # fmt: skip
    try:
        yield running
    finally:
        await running.aclose()


def buffers(service: StatefulTokenService) -> list[int]:
    """The read buffer of every open connection to the service (asyncio's private fields, watched here)."""
    server = service.service.runner.server
    assert server is not None
    return [len(handler.transport._ssl_protocol._ssl_buffer) for handler in server.connections]  # type: ignore[union-attr]


async def post(
    service: StatefulTokenService, ctx: ssl.SSLContext, body: bytes, *headers: str
) -> tuple[int, dict[str, Any]]:
    """One raw POST /token over mTLS, the body written while the response is awaited; (status, JSON body)."""
    head = ["POST /token HTTP/1.1", "Host: b", "Content-Type: application/x-www-form-urlencoded", *headers]
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port, ssl=ctx)
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        async with asyncio.timeout(10):
            await writer.drain()
            reply_head = await reader.readuntil(b"\r\n\r\n")
            length = int(reply_head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            return int(reply_head.split(b" ")[1]), json.loads(await reader.readexactly(length))
    finally:
        writer.close()


def chunked(body: bytes, size: int = 5000) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_200_kib_form_is_refused_for_its_size_and_the_next_exchange_is_served(
    service: StatefulTokenService, ctx: ssl.SSLContext, framing: str
) -> None:
    body = (FORM + "&pad=" + "a" * BIG).encode()
    if framing == "chunked":
        status, error = await post(service, ctx, chunked(body), "Transfer-Encoding: chunked")
    else:
        status, error = await post(service, ctx, body, f"Content-Length: {len(body)}")

    assert (status, error["error"]) == (400, "invalid_request")
    assert "larger than 65536 bytes" in error["error_description"]
    status, token = await post(service, ctx, FORM.encode(), f"Content-Length: {len(FORM)}")
    assert status == 200 and token["token_type"] in ("Bearer", "DPoP") and token["access_token"]


async def test_a_form_of_many_records_just_under_the_limit_is_read_whole_and_exchanged(
    service: StatefulTokenService, ctx: ssl.SSLContext
) -> None:
    body = (FORM + "&pad=" + "b" * (64 * 1024 - len(FORM) - 5)).encode()  # RFC 6749 §3.2: unknown ones ignored
    assert len(body) == 64 * 1024

    status, token = await post(service, ctx, body, f"Content-Length: {len(body)}")

    assert status == 200 and token["access_token"]


async def test_a_long_feed_stream_carries_every_entry_and_its_heartbeats_while_tokens_are_issued(
    service: StatefulTokenService, ctx: ssl.SSLContext, read_buffer: int
) -> None:
    expiry = datetime.now(UTC) + timedelta(hours=1)
    batches, per_batch = 12, 250  # a batch is one frame of about 30 KiB: two TLS records per write at least
    connector = aiohttp.TCPConnector(ssl=ctx, force_close=True)
    url = f"https://127.0.0.1:{service.port}/v1/revocations"
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as stream:
        assert stream.status == 200
        parser, seqs, comments = SseParser(), list[int](), 0
        async with asyncio.timeout(20):
            opening: list[SseEvent | str] = []
            while len(opening) < 2:  # hello, snapshot (empty): the entries below all come live
                opening += parser.feed(await stream.content.readany())
            for batch in range(batches):
                await service.state.store.revocations.append(
                    [TokenRevoked(f"jti-{batch}-{i}-{'x' * 64}", expiry) for i in range(per_batch)]
                )
                status, _ = await post(service, ctx, FORM.encode(), f"Content-Length: {len(FORM)}")
                assert status == 200
                assert set(buffers(service)) == {read_buffer or 256 * 1024}
                await asyncio.sleep(0.06)  # a heartbeat between batches
            while len(seqs) < batches * per_batch or comments < batches:
                for item in parser.feed(await stream.content.readany()):
                    if isinstance(item, str):
                        comments += 1
                    elif item.event not in ("hello", "snapshot"):
                        seqs.append(_seq(item))

    assert seqs == list(range(1, batches * per_batch + 1))  # in order, none lost or repeated


def _seq(event: SseEvent) -> int:
    return parse_entry(event).seq


async def test_every_connection_to_the_service_has_the_configured_buffer_and_python_s_default_is_untouched(
    service: StatefulTokenService, ctx: ssl.SSLContext, read_buffer: int
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port, ssl=ctx)
    try:
        writer.write(b"GET /v1/revocations HTTP/1.1\r\nHost: b\r\n\r\n")
        async with asyncio.timeout(5):
            await reader.readuntil(b"event: hello")
        assert buffers(service) == [read_buffer or 256 * 1024]
    finally:
        writer.close()
    assert sslproto.SSLProtocol.max_size == 256 * 1024
