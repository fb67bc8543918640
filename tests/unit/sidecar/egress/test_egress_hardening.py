"""The egress proxy against a target or an app that tries to get the key out of it: compression, TRACE, reflected
reason phrases, half-finished exchanges, paths a server reads otherwise, URL user information in the log."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
from collections.abc import AsyncIterator

import pytest

from tests.unit.sidecar.egress.egress_helpers import App
from tests.unit.sidecar.egress.fake_apikeys import SECRET, FakeApiKeys, entry
from tests.unit.sidecar.egress.target_server import TargetServer, TargetTls


async def _anything_on(app: App, apikeys: FakeApiKeys, target: TargetServer) -> str:
    """An exception ``any`` covering every path of ``localhost`` (Authorization: Bearer); its URL prefix."""
    apikeys.add(entry("any", "localhost", target.port), SECRET)
    await app.egress.proxy.catalog.refresh()
    return f"http://localhost:{target.port}"


async def test_the_target_is_asked_for_an_uncompressed_body_whatever_the_app_accepts(
    app: App, target: TargetServer
) -> None:
    url = f"http://api.example.test:{target.port}/v1/x"
    reply = await app.forward("GET", url, headers={"Accept-Encoding": "gzip, br"})

    assert reply.status == 200
    assert target.received[0].header("Accept-Encoding") == ["identity"]
    assert SECRET not in reply.text()


async def test_a_compressed_answer_is_refused_502_and_its_body_never_reaches_the_app(
    app: App, apikeys: FakeApiKeys, target: TargetServer
) -> None:
    base = await _anything_on(app, apikeys, target)
    reply = await app.forward("GET", f"{base}/gzip", headers={"Accept-Encoding": "gzip"})
    head = await app.forward("HEAD", f"{base}/gzip")  # no body: nothing to check, the headers are masked

    assert (reply.status, reply.error) == (502, "bad_gateway")
    assert "compressed body the proxy cannot check for the key" in reply.json()["error_description"]
    assert gzip.compress(f"Bearer {SECRET}".encode()) not in reply.body
    assert (head.status, head.body, head.headers["Content-Encoding"]) == (200, b"", "gzip")


async def test_a_key_the_target_reflects_in_the_reason_phrase_or_in_an_escaped_form_is_masked(
    app: App, apikeys: FakeApiKeys, target: TargetServer
) -> None:
    secret = "sk_live/With+Slash=&<Odd>0123456789"
    apikeys.add(entry("odd", "localhost", target.port), secret)
    await app.egress.proxy.catalog.refresh()
    raw = await app.raw(
        f"GET http://localhost:{target.port}/reflect HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )

    assert target.received[0].header("Authorization") == [f"Bearer {secret}"]
    assert raw.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b"sk_live" not in raw.lower() and b"0123456789" not in raw


@contextlib.asynccontextmanager
async def raw_target(context: ssl.SSLContext, answer: bytes = b"") -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TLS target that reads a request's head, writes ``answer`` (nothing: no response) and hangs up; its port and
    the heads it read."""
    heads: list[bytes] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], heads
    finally:
        server.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_request_that_reached_the_target_but_got_no_response_counts_as_a_use(
    app: App, apikeys: FakeApiKeys, tls: TargetTls
) -> None:
    closed = _closed_port()
    async with raw_target(tls.trusted) as (port, heads):
        apikeys.add(entry("silent", "localhost", port), SECRET)
        apikeys.add(entry("closed", "other.example.test", closed), SECRET)
        await app.egress.proxy.catalog.refresh()
        hung_up = await app.forward("POST", f"http://localhost:{port}/v1/charges", data=b"amount=1")
        unreachable = await app.forward("POST", f"http://other.example.test:{closed}/v1/charges", data=b"amount=1")
    await app.egress.proxy.reporter.flush()

    assert f"Bearer {SECRET}".encode() in heads[0]
    assert (hung_up.status, hung_up.error) == (502, "bad_gateway")
    assert "did not answer" in hung_up.json()["error_description"]
    assert "could not be reached" in unreachable.json()["error_description"]
    assert apikeys.uses() == {("silent", 1, f"https://localhost:{port}"): 1}


async def test_user_information_and_the_query_of_a_refused_url_never_reach_the_log_or_the_reply(
    app: App, target: TargetServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://alice:AppPassw0rd@api.example.test:{target.port}/v1/x?token=app-token-123"
    raw = await app.raw(f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())

    assert raw.startswith(b"HTTP/1.1 400 ")
    assert f"api.example.test:{target.port}/v1/x refused" in caplog.text
    for private in ("alice", "AppPassw0rd", "app-token-123"):
        assert private not in caplog.text and private.encode() not in raw
    assert target.received == []


async def test_a_percent_encoded_placeholder_in_a_header_to_another_target_is_refused_and_reported(
    app: App, apikeys: FakeApiKeys, target: TargetServer
) -> None:
    headers = {"X-K": "spiffe-broker%3Aexception%2Fstripe"}
    reply = await app.forward("GET", f"http://other.example.test:{target.port}/geocode", headers=headers)
    await app.egress.proxy.reporter.flush()

    assert (reply.status, reply.error) == (403, "placeholder_to_other_target")
    assert apikeys.refusals() == [("stripe", "placeholder_to_other_target")]
    assert target.received == []


async def test_trace_is_refused_405_and_never_forwarded(app: App, target: TargetServer) -> None:
    raw = await app.raw(
        f"TRACE http://api.example.test:{target.port}/v1/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )

    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ") and b"Allow: GET" in head
    assert b'"method_not_allowed"' in body
    assert target.received == []


async def test_the_response_gets_no_content_type_the_target_did_not_send_and_via_names_each_messages_version(
    app: App, apikeys: FakeApiKeys, tls: TargetTls
) -> None:
    answer = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with raw_target(tls.trusted, answer) as (port, heads):
        apikeys.add(entry("old", "localhost", port), SECRET)
        await app.egress.proxy.catalog.refresh()
        raw = await app.raw(f"GET http://localhost:{port}/x HTTP/1.0\r\nHost: x\r\n\r\n".encode())

    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n") and body == b"ok"
    assert b"content-type" not in head.lower()
    assert b"\r\nVia: 1.0 spiffe-broker-sidecar" in head
    assert b"\r\nVia: 1.0 spiffe-broker-sidecar\r\n" in heads[0]
