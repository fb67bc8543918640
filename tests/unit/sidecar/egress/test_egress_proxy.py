"""The egress proxy end to end: an app's request, the real proxy, its real mTLS client against the fake token
service, and a real HTTPS target under its own CA."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from broker.apikeys.model import placeholder
from broker.identity.memory import InMemorySvidSource
from broker.testing import ManualClock
from tests.unit.sidecar.egress.egress_helpers import App, running_egress
from tests.unit.sidecar.egress.fake_apikeys import OTHER_SECRET, SECRET, FakeApiKeys, entry
from tests.unit.sidecar.egress.target_server import TargetServer, TargetTls

MASK = "*" * len(SECRET)


def api(target: TargetServer, path: str = "/v1/charges") -> str:
    return f"http://api.example.test:{target.port}{path}"


async def test_a_forward_proxy_request_reaches_the_target_over_tls_with_the_key_injected(
    app: App, target: TargetServer
) -> None:
    reply = await app.forward("POST", api(target, "/v1/charges?limit=3"), data=b"amount=100")

    assert reply.status == 200
    (received,) = target.received
    assert (received.method, received.path_qs) == ("POST", "/v1/charges?limit=3")
    assert received.header("Authorization") == [f"Bearer {SECRET}"]
    assert received.header("Host") == [f"api.example.test:{target.port}"]
    assert received.header("Via") == ["1.1 spiffe-broker-sidecar"]


async def test_the_apps_response_never_contains_the_key_even_when_the_target_echoes_it(
    app: App, target: TargetServer
) -> None:
    reply = await app.forward("GET", api(target))

    assert reply.status == 200
    assert SECRET not in reply.text()
    assert reply.headers["X-Echo-Authorization"] == f"Bearer {MASK}"
    assert reply.json()["headers"]["Authorization"] == [f"Bearer {MASK}"]  # same length: Content-Length still holds


async def test_a_local_route_goes_to_its_exceptions_target(app: App, target: TargetServer) -> None:
    reply = await app.route("GET", "/stripe/v1/customers/cus_1?expand=x")

    assert reply.status == 200
    (received,) = target.received
    assert received.path_qs == "/v1/customers/cus_1?expand=x"
    assert received.header("Authorization") == [f"Bearer {SECRET}"]
    assert received.header("Host") == [f"api.example.test:{target.port}"]


@pytest.mark.parametrize(
    "url",
    ["http://unknown.example.test:{port}/v1/x", "http://api.example.test:{port}/v2/outside-the-prefix",
     "http://api.example.test:{other}/v1/another-port"],
    ids=["unknown-host", "path-outside-prefix", "other-port"],
)  # fmt: skip
async def test_a_target_no_exception_covers_is_refused_403_and_reported(
    app: App, target: TargetServer, apikeys: FakeApiKeys, url: str
) -> None:
    reply = await app.forward("GET", url.format(port=target.port, other=target.port + 1))
    await app.egress.proxy.reporter.flush()

    assert (reply.status, reply.error) == (403, "target_not_covered")
    assert target.received == []
    assert apikeys.refusals() == [(None, "target_not_covered")]


async def test_an_unknown_local_route_is_refused_403(app: App, target: TargetServer) -> None:
    reply = await app.route("GET", "/no-such-exception/v1/x")

    assert (reply.status, reply.error) == (403, "target_not_covered")
    assert target.received == []


async def test_the_placeholder_in_the_named_header_is_replaced_by_the_secret(app: App, target: TargetServer) -> None:
    reply = await app.forward("GET", api(target), headers={"Authorization": f"Bearer {placeholder('stripe')}"})

    assert reply.status == 200
    assert target.received[0].header("Authorization") == [f"Bearer {SECRET}"]


async def test_the_placeholder_in_the_named_query_parameter_is_replaced_by_the_secret(
    app: App, target: TargetServer
) -> None:
    url = f"http://other.example.test:{target.port}/geocode?q=x&key={quote(placeholder('maps'), safe='')}"
    reply = await app.forward("GET", url)

    assert reply.status == 200
    assert target.received[0].path_qs == f"/geocode?q=x&key={OTHER_SECRET}"
    assert OTHER_SECRET not in reply.text()


@pytest.mark.parametrize(
    ("where", "value"),
    [("header", "Bearer {p}"), ("other-header", "{p}"), ("query", "{p}"), ("query-encoded", "{pq}"),
     ("query-double-encoded", "{pqq}"), ("path", "{p}")],
    ids=["its-slot", "another-header", "query", "query-percent-encoded", "query-encoded-twice", "path"],
)  # fmt: skip
async def test_a_placeholder_sent_to_a_target_its_exception_does_not_cover_is_refused_and_reported(
    app: App, target: TargetServer, apikeys: FakeApiKeys, where: str, value: str
) -> None:
    mark = placeholder("stripe")
    text = value.format(p=mark, pq=quote(mark, safe=""), pqq=quote(quote(mark, safe=""), safe=""))
    url, headers = f"http://other.example.test:{target.port}/geocode", {}
    if where == "header":
        headers["Authorization"] = text
    elif where == "other-header":
        headers["X-Trace"] = text
    elif where == "path":
        url += "/" + text.replace("/", "_") + "/" + text
    else:
        url += "?q=" + text
    reply = await app.forward("GET", url, headers=headers)
    await app.egress.proxy.reporter.flush()

    assert (reply.status, reply.error) == (403, "placeholder_to_other_target")
    assert "possible exfiltration attempt" in reply.json()["error_description"]
    assert target.received == []
    assert apikeys.refusals() == [("stripe", "placeholder_to_other_target")]


async def test_a_credential_the_app_sent_in_the_slot_is_stripped_and_replaced(app: App, target: TargetServer) -> None:
    headers = [("Authorization", "Bearer app-own-key"), ("authorization", "Basic YXBwOmtleQ==")]
    reply = await app.forward("GET", api(target), headers=headers)
    url = f"http://other.example.test:{target.port}/geocode?key=app-own-key&q=1&key=another"
    query = await app.forward("GET", url)

    assert (reply.status, query.status) == (200, 200)
    assert target.received[0].header("Authorization") == [f"Bearer {SECRET}"]
    assert target.received[1].path_qs == f"/geocode?q=1&key={OTHER_SECRET}"


async def test_hop_by_hop_headers_are_not_forwarded(app: App, target: TargetServer) -> None:
    headers = {"Connection": "X-Hop", "X-Hop": "1", "Proxy-Authorization": "Basic eDp5", "X-Kept": "yes"}
    reply = await app.forward("GET", api(target), headers=headers)

    assert reply.status == 200
    received = target.received[0]
    assert received.header("X-Hop") == received.header("Proxy-Authorization") == []
    assert received.header("X-Kept") == ["yes"]


async def test_connect_is_refused_405_with_an_explanation_and_reported(
    app: App, target: TargetServer, apikeys: FakeApiKeys
) -> None:
    authority = f"api.example.test:{target.port}".encode()
    raw = await app.raw(b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
    await app.egress.proxy.reporter.flush()

    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ")
    assert b"Allow: GET" in head
    assert b'"connect_not_supported"' in body and b"TLS interception" not in body
    assert b"cannot inject an API key" in body
    assert apikeys.refusals() == [(None, "connect_tunnel")]
    assert target.received == []


async def test_a_path_a_server_could_read_as_another_path_is_refused_400(app: App, target: TargetServer) -> None:
    close = "Host: 127.0.0.1\r\nConnection: close\r\n\r\n"  # raw: a client library would normalise the path first
    dots = await app.raw(f"GET http://api.example.test:{target.port}/v1/../admin HTTP/1.1\r\n{close}".encode())
    encoded = await app.raw(f"GET /stripe/v1/%2e%2E/admin HTTP/1.1\r\n{close}".encode())
    slash = await app.raw(f"GET /stripe/v1%2fadmin HTTP/1.1\r\n{close}".encode())

    for raw in (dots, encoded, slash):
        assert raw.startswith(b"HTTP/1.1 400 ") and b'"invalid_request"' in raw
    assert target.received == []


async def test_uses_are_reported_aggregated_per_exception_version_and_target(
    app: App, target: TargetServer, apikeys: FakeApiKeys
) -> None:
    for _ in range(3):
        assert (await app.forward("GET", api(target))).status == 200
    assert (await app.route("GET", "/stripe/v1/x")).status == 200
    assert await app.egress.proxy.reporter.flush()

    assert apikeys.uses() == {("stripe", 1, f"https://api.example.test:{target.port}"): 4}
    assert apikeys.granted == ["stripe"]  # one grant, held for the four requests


async def test_a_name_the_catalog_does_not_know_fetches_it_again_at_most_once_per_interval(
    apikeys: FakeApiKeys, target: TargetServer, workload_source: InMemorySvidSource, tmp_short: Path, tls: TargetTls
) -> None:
    monotonic = ManualClock()
    async with running_egress(apikeys, workload_source, tmp_short, tls.ca_file, monotonic=monotonic) as app:
        apikeys.add(entry("github", "localhost", target.port, slot="X-Api-Key", template="{secret}"), "gh-" + SECRET)
        too_soon = await app.route("GET", "/github/repos")  # the catalog was fetched a moment ago
        monotonic.advance(2.5)
        found = await app.route("GET", "/github/repos")
        calls = apikeys.catalog_calls
        unknown = [await app.route("GET", "/nothing-here/x") for _ in range(3)]

    assert (too_soon.status, found.status) == (403, 200)
    assert target.received[0].header("X-Api-Key") == ["gh-" + SECRET]
    assert [reply.status for reply in unknown] == [403, 403, 403]
    assert apikeys.catalog_calls == calls  # misses right after a fetch do not fetch again


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Host": "rebound.evil.example"}],
    ids=["origin", "sec-fetch", "dns-rebinding-host"],
)
async def test_the_loopback_port_refuses_requests_a_web_page_could_make(
    app: App, target: TargetServer, headers: dict[str, str]
) -> None:
    lines = "".join(f"{k}: {v}\r\n" for k, v in {"Host": "127.0.0.1", **headers}.items())
    raw = await app.raw(f"GET /stripe/v1/x HTTP/1.1\r\n{lines}Connection: close\r\n\r\n".encode())
    local = await app.raw(b"GET /stripe/v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")

    assert raw.startswith(b"HTTP/1.1 403 ") and b"local clients only" in raw
    assert local.startswith(b"HTTP/1.1 200 ")
    assert len(target.received) == 1


async def test_a_head_request_gets_the_targets_headers_and_no_body(app: App, target: TargetServer) -> None:
    head = await app.forward("HEAD", api(target, "/v1/same"))
    get = await app.forward("GET", api(target, "/v1/same"))

    assert (head.status, head.body) == (200, b"")
    assert int(head.headers["Content-Length"]) == len(get.body) + 1  # "HEAD" in the echo is one longer than "GET"
    assert [r.method for r in target.received] == ["HEAD", "GET"]
