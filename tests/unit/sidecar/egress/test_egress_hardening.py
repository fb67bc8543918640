"""The egress proxy against a target or an app that tries to get the key out of it: compression, TRACE, reflected
reason phrases, half-finished exchanges, paths a server reads otherwise, URL user information in the log."""

from __future__ import annotations

import gzip

from tests.unit.sidecar.egress.egress_helpers import App
from tests.unit.sidecar.egress.fake_apikeys import SECRET, FakeApiKeys, entry
from tests.unit.sidecar.egress.target_server import TargetServer


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


async def test_trace_is_refused_405_and_never_forwarded(app: App, target: TargetServer) -> None:
    raw = await app.raw(
        f"TRACE http://api.example.test:{target.port}/v1/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )

    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ") and b"Allow: GET" in head
    assert b'"method_not_allowed"' in body
    assert target.received == []
