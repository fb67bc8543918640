"""A listener's TLS read buffer: the asyncio attribute it relies on exists on this Python (CI runs 3.11 and 3.13),
only the sized listener's connections change, and the listener still times out handshakes and serves."""

from __future__ import annotations

import asyncio
import logging
import ssl
from asyncio import sslproto
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

import pytest
import uvloop
from aiohttp import web

from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.context import server_ssl_context
from broker.web import HardenedAppRunner, ListenerLimits, start_tcp_site, tls_buffer
from broker.web.tls_buffer import DEFAULT_TLS_READ_BUFFER, python_tls_read_buffer, tls_protocol_factory

# What these tests measure is asyncio's own TLS protocol, so they run on asyncio's loop also when the suite runs
# on uvloop (tests/conftest.py); what a listener does on uvloop is the last test's.
pytestmark = pytest.mark.standard_event_loop

PYTHON_DEFAULT = 256 * 1024


def server_buffer(request: web.BaseRequest) -> int:
    """The bytes of the read buffer behind this request's TLS connection (asyncio's private fields, watched here)."""
    transport = request.transport
    assert transport is not None
    protocol = transport._ssl_protocol  # type: ignore[attr-defined]
    assert isinstance(protocol, sslproto.SSLProtocol)
    return len(protocol._ssl_buffer)  # type: ignore[attr-defined]


@asynccontextmanager
async def listener(
    read_buffer: int, limits: ListenerLimits | None = None, answer: Callable[[web.BaseRequest], str] | None = None
) -> AsyncIterator[int]:
    """A TLS listener answering ``GET /`` with ``answer(request)``, by default the size of the connection's read
    buffer; yields its port."""
    ca = DevCA.ephemeral("example.org")
    source = InMemorySvidSource(ca, SpiffeId.parse("spiffe://example.org/svc"))
    context = server_ssl_context(source, require_client_cert=False)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=answer(request) if answer else str(server_buffer(request)))

    app = web.Application()
    app.router.add_get("/", handler)
    runner = HardenedAppRunner(app, limits=limits)
    await runner.setup()
    try:
        yield await start_tcp_site(runner, "127.0.0.1", 0, ssl_context=context, tls_read_buffer=read_buffer)
    finally:
        await runner.cleanup()
        context.detach()


def client() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the server's identity is not what these tests are about
    return context


async def get_buffer_size(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client())
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(5):
            reply = await reader.read()
    finally:
        writer.close()
    return int(reply.partition(b"\r\n\r\n")[2])


def test_asyncio_tls_protocol_has_the_int_buffer_size_that_is_sized_per_listener() -> None:
    """What the module relies on, on this Python: an int ``max_size`` class attribute, 256 KiB on 3.11 and 3.13."""
    assert python_tls_read_buffer() == PYTHON_DEFAULT
    assert isinstance(sslproto.SSLProtocol.max_size, int)


async def test_the_standard_loop_is_supported() -> None:
    assert tls_buffer.unsupported_reason(asyncio.get_running_loop()) is None


@pytest.mark.parametrize("size", [DEFAULT_TLS_READ_BUFFER, 4096, 1024 * 1024], ids=["default", "minimum", "maximum"])
async def test_a_sized_listener_gives_its_connections_that_buffer_and_leaves_python_s_default_alone(size: int) -> None:
    async with listener(size) as sized, listener(0) as stock:
        assert await get_buffer_size(sized) == size
        assert await get_buffer_size(stock) == PYTHON_DEFAULT
    assert sslproto.SSLProtocol.max_size == PYTHON_DEFAULT  # process-wide default untouched


@pytest.mark.parametrize("size", [1, 4095, 1024 * 1024 + 1, -1])
async def test_a_buffer_size_out_of_range_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="TLS read buffer"):
        tls_protocol_factory(web.Server(_never), ssl.create_default_context(), read_buffer=size,
                             handshake_timeout=None, loop=asyncio.get_running_loop())  # fmt: skip


async def _never(request: web.BaseRequest) -> web.StreamResponse:
    raise AssertionError("not called")


async def test_a_handshake_that_never_finishes_is_closed_at_the_listener_s_deadline() -> None:
    async with listener(DEFAULT_TLS_READ_BUFFER, ListenerLimits(handshake_timeout=0.2)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # plain TCP: no ClientHello
        try:
            async with asyncio.timeout(5):
                assert await reader.read() == b""
        finally:
            writer.close()
        assert await get_buffer_size(port) == DEFAULT_TLS_READ_BUFFER  # and the listener serves on


async def test_a_failed_handshake_closes_that_connection_only(caplog: pytest.LogCaptureFixture) -> None:
    async with listener(DEFAULT_TLS_READ_BUFFER) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # HTTP where a ClientHello belongs
        async with asyncio.timeout(5):
            await reader.read()
        writer.close()
        assert await get_buffer_size(port) == DEFAULT_TLS_READ_BUFFER
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        (lambda m: m.setattr(tls_buffer, "python_tls_read_buffer", lambda: None), "no int max_size"),
        (lambda m: None, "not the standard library's"),
    ],
    ids=["no-attribute", "other-loop"],
)
async def test_where_it_cannot_size_the_buffer_it_says_so_once_at_debug_and_keeps_python_s(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    patch: Callable[[pytest.MonkeyPatch], None],
    reason: str,
) -> None:
    patch(monkeypatch)
    monkeypatch.setattr(tls_buffer, "_reported", set())
    other = cast(asyncio.AbstractEventLoop, object())  # not a BaseEventLoop, as uvloop's Loop is not
    loop = asyncio.get_running_loop() if reason == "no int max_size" else other
    with caplog.at_level(logging.DEBUG, logger="broker.web.tls_buffer"):
        for _ in range(2):
            made = tls_protocol_factory(web.Server(_never), ssl.create_default_context(), read_buffer=4096,
                                        handshake_timeout=None, loop=loop)  # fmt: skip
            assert made is None  # the caller then passes ssl= to create_server: Python's own buffer
    assert [(r.levelno, reason in r.getMessage()) for r in caplog.records] == [(logging.DEBUG, True)]


async def test_zero_means_python_s_default_without_a_word() -> None:
    made = tls_protocol_factory(web.Server(_never), ssl.create_default_context(), read_buffer=0,
                                handshake_timeout=None, loop=asyncio.get_running_loop())  # fmt: skip
    assert made is None


def test_on_uvloop_a_sized_listener_serves_with_uvloop_s_own_tls_buffer() -> None:
    """uvloop's TLS protocol is compiled and not sized here: the listener falls back to ``ssl=`` and serves."""

    async def ask() -> tuple[str | None, int, bytes]:
        async with listener(DEFAULT_TLS_READ_BUFFER, answer=lambda _: "served") as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client())
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            async with asyncio.timeout(5):
                reply = await reader.read()
            writer.close()
        loop = asyncio.get_running_loop()
        return tls_buffer.unsupported_reason(loop), int(reply.split()[1]), reply.partition(b"\r\n\r\n")[2]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        reason, status, body = runner.run(ask())
    assert reason is not None and "uvloop" in reason
    assert (status, body) == (200, b"served")
