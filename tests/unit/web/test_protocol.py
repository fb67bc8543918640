"""Tests for broker.web.protocol: no request byte echoed or logged, request deadlines, half-close answered.

Raw sockets on a real listener (Unix socket or loopback TCP), because every behaviour here lives below aiohttp's
request API: in its HTTP parser, its connection handler and asyncio's transports.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.context import server_ssl_context
from broker.web import HardenedAppRunner, ListenerLimits, start_sock_site, start_tcp_site

CANARY = "CANARY-7f3a9c"
FAST = ListenerLimits(request_timeout=0.3, idle_timeout=0.6, handshake_timeout=0.3)
DONE = web.AppKey("done", asyncio.Event)


async def body_length(request: web.Request) -> web.Response:
    try:
        return web.json_response({"length": len(await request.read())})
    finally:
        request.app[DONE].set()


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def refused(request: web.Request) -> web.Response:
    raise ConnectionRefusedError("an outbound call of the handler was refused")


def build_app() -> web.Application:
    app = web.Application()
    app[DONE] = asyncio.Event()
    app.router.add_get("/healthz", ok)
    app.router.add_post("/len", body_length)
    app.router.add_get("/refused", refused)
    return app


@pytest.fixture
def tmp_short() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="web-") as directory:
        yield Path(directory)


@pytest.fixture
async def served(tmp_short: Path) -> AsyncIterator[tuple[HardenedAppRunner, Path]]:
    runner = HardenedAppRunner(build_app(), limits=FAST)
    await runner.setup()
    path = tmp_short / "s.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.setblocking(False)
    await start_sock_site(runner, sock)
    yield runner, path
    await runner.cleanup()


async def exchange(path: Path, data: bytes, *, half_close: bool = False, close: bool = False) -> bytes:
    """Send ``data``; optionally half-close (SHUT_WR) or close; read until the server closes (5 s at most)."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(data)
        if half_close:
            writer.write_eof()
        if close:
            return b""
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


MALFORMED = [
    f"GET / HTTP/1.1\r\nHost: x\r\nX-Token\x01: {CANARY}\r\n\r\n".encode(),
    f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CANARY}\x00\r\n\r\n".encode(),
    f"G{CANARY}\x7f / HTTP/1.1\r\n\r\n".encode(),
    f"GET /{CANARY} HTTP/9.9\r\n\r\n".encode(),
    f"GET /{CANARY * 2000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    f"POST /len HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{CANARY}\r\n".encode(),
    f"POST /len HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2{CANARY}\r\n\r\n".encode(),
    f"GET / HTTP/1.1\r\nHost: x\r\n {CANARY}: folded\r\n\r\n".encode(),
]


@pytest.mark.parametrize(
    "raw",
    MALFORMED,
    ids=[
        "ctl-in-name",
        "nul-in-value",
        "bad-method",
        "bad-version",
        "long-line",
        "bad-chunk",
        "two-lengths",
        "obs-fold",
    ],
)
async def test_malformed_request_bytes_never_come_back_nor_reach_a_log(
    served: tuple[HardenedAppRunner, Path], raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        reply = await exchange(served[1], raw)
    assert re.match(rb"HTTP/1\.[01] 4\d\d ", reply), reply[:40]
    assert CANARY.encode() not in reply
    assert CANARY not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_parser_error_body_is_fixed_json(served: tuple[HardenedAppRunner, Path]) -> None:
    reply = await exchange(served[1], b"GET / HTTP/1.1\r\nHost: x\r\nBad\x01: v\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400") and b"application/json" in head
    assert body == b'{"error":"invalid_request","error_description":"malformed HTTP request"}'


async def test_headers_that_never_finish_are_timed_out(served: tuple[HardenedAppRunner, Path]) -> None:
    assert await exchange(served[1], b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1") == b""


async def test_body_that_never_finishes_is_timed_out_without_an_error_line(
    served: tuple[HardenedAppRunner, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        reply = await exchange(served[1], b"POST /len HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        await served[0].app[DONE].wait()
    assert reply == b""
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_connection_that_sends_nothing_is_closed_after_the_idle_timeout(
    served: tuple[HardenedAppRunner, Path],
) -> None:
    assert await exchange(served[1], b"") == b""


async def test_keep_alive_connection_serves_requests_within_the_deadline(
    served: tuple[HardenedAppRunner, Path],
) -> None:
    reader, writer = await asyncio.open_unix_connection(str(served[1]))
    try:
        for _ in range(3):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
            assert head.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("raw", "answers"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 1),
        (b"POST /len HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 1),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 2, 2),
    ],
    ids=["get", "post-with-body", "pipelined"],
)
async def test_complete_request_then_half_close_is_answered(
    served: tuple[HardenedAppRunner, Path], raw: bytes, answers: int
) -> None:
    reply = await exchange(served[1], raw, half_close=True)
    assert reply.count(b"HTTP/1.1 200 OK") == answers


async def test_incomplete_body_then_half_close_is_closed_without_answer(
    served: tuple[HardenedAppRunner, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        raw = b"POST /len HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"
        assert await exchange(served[1], raw, half_close=True) == b""
        await served[0].app[DONE].wait()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_client_vanishing_mid_body_is_not_a_server_error(
    served: tuple[HardenedAppRunner, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        raw = b"POST /len HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"
        await exchange(served[1], raw, close=True)
        await served[0].app[DONE].wait()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert " 500 " not in caplog.text


async def test_connection_error_on_a_live_connection_is_a_logged_server_error(
    served: tuple[HardenedAppRunner, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        reply = await exchange(served[1], b"GET /refused HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500") and body == b'{"error":"server_error"}'
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "ConnectionRefusedError" in errors[0].getMessage()


async def test_tls_handshake_that_never_starts_is_timed_out() -> None:
    source = InMemorySvidSource(DevCA.ephemeral("example.org"), SpiffeId.parse("spiffe://example.org/web"))
    context = server_ssl_context(source, require_client_cert=False)
    runner = HardenedAppRunner(build_app(), limits=FAST)
    await runner.setup()
    try:
        port = await start_tcp_site(runner, "127.0.0.1", 0, ssl_context=context)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()
    finally:
        await runner.cleanup()
        context.detach()


def test_listener_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ListenerLimits(request_timeout=0)


async def test_tls_site_accepts_a_handshake(tmp_short: Path) -> None:
    source = InMemorySvidSource(DevCA.ephemeral("example.org"), SpiffeId.parse("spiffe://example.org/web"))
    context = server_ssl_context(source, require_client_cert=False)
    runner = HardenedAppRunner(build_app(), limits=FAST)
    await runner.setup()
    try:
        port = await start_tcp_site(runner, "127.0.0.1", 0, ssl_context=context)
        client = ssl.create_default_context()
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(5):
            assert (await reader.read()).startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        await runner.cleanup()
        context.detach()
