"""``GET /v1/revocations`` over real TLS on the in-memory store: who may follow, where each follower starts."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from broker._sealing import generate_kek_file
from broker.config import FeedSettings, load_settings
from broker.devtools.devca import DevCA
from broker.errors import ConfigError
from broker.events.feed import parse_entry, parse_hello, parse_snapshot
from broker.events.revocations import SubjectPattern, SubjectQuarantined, TokenRevoked
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.server.stateful_service import start_stateful_token_service
from broker.tokens.policy import FilePolicyStore
from broker.web import ListenerLimits
from tests.unit.server.feed_helpers import FeedServer, feed_server, read_stream, revoked, until
from tests.unit.server.token_service_helpers import (
    BROKER_ID,
    CLIENT_ID,
    ISSUER,
    POLICY,
    Broker,
    client_context,
    request,
)


@pytest.fixture
def ca() -> DevCA:
    return DevCA.ephemeral("example.org")


async def test_a_follower_at_zero_gets_hello_then_a_snapshot_of_the_live_entries(ca: DevCA) -> None:
    async with feed_server(ca) as server:
        await server.append(revoked(3))

        stream = await read_stream(server.context(), server.url, until=2)

    assert stream.status == 200
    assert stream.headers["Content-Type"] == "text/event-stream"
    assert stream.headers["Cache-Control"] == "no-store"
    hello, snapshot = stream.events[:2]
    assert (hello.event, hello.id) == ("hello", None)
    assert parse_hello(hello).head == 3
    parsed = parse_snapshot(snapshot)
    assert (parsed.head, snapshot.id) == (3, "3")
    assert [entry.seq for entry in parsed.entries] == [1, 2, 3]
    assert parsed.feed_id == parse_hello(hello).feed_id


async def test_a_resuming_follower_gets_every_entry_after_its_position_then_live_ones_without_gaps(ca: DevCA) -> None:
    async with feed_server(ca) as server:
        await server.append(revoked(5))
        feed_id = server.feed.broadcaster.feed_id

        async def later_entries() -> None:
            await asyncio.sleep(0.2)
            await server.append(revoked(2))

        appending = asyncio.create_task(later_entries())
        stream = await read_stream(
            server.context(), f"{server.url}?feed_id={feed_id}", headers={"Last-Event-ID": "2"}, until=6
        )
        await appending

    hello, *entries = stream.events
    assert parse_hello(hello).head == 5
    assert [parse_entry(event).seq for event in entries] == [3, 4, 5, 6, 7]
    assert [event.event for event in entries] == ["token.revoked"] * 5


async def test_after_in_the_query_works_like_last_event_id(ca: DevCA) -> None:
    async with feed_server(ca) as server:
        await server.append(revoked(4))

        stream = await read_stream(server.context(), f"{server.url}?after=3", until=2)

    assert [event.event for event in stream.events] == ["hello", "token.revoked"]
    assert stream.events[1].id == "4"


async def test_a_follower_of_another_feed_id_gets_a_snapshot_whatever_its_position(ca: DevCA) -> None:
    async with feed_server(ca) as server:
        await server.append(revoked(4))

        stream = await read_stream(
            server.context(), f"{server.url}?feed_id=some-other-log", headers={"Last-Event-ID": "2"}, until=2
        )

    assert [event.event for event in stream.events] == ["hello", "snapshot"]
    assert [entry.seq for entry in parse_snapshot(stream.events[1]).entries] == [1, 2, 3, 4]


async def test_a_follower_below_the_horizon_gets_a_snapshot_without_the_pruned_entries(ca: DevCA) -> None:
    async with feed_server(ca) as server:
        soon = datetime.now(UTC) + timedelta(seconds=1)
        await server.append([TokenRevoked("short", soon), *revoked(2)])
        await server.store.revocations.prune(soon + timedelta(seconds=1))
        feed_id = server.feed.broadcaster.feed_id
        await server.append(revoked(1))  # the broadcaster reads the log again and learns the horizon
        await asyncio.sleep(0.05)

        stream = await read_stream(
            server.context(), f"{server.url}?feed_id={feed_id}", headers={"Last-Event-ID": "0"}, until=2
        )
        behind = await read_stream(server.context(), f"{server.url}?feed_id={feed_id}&after=0", until=2)

    snapshot = parse_snapshot(stream.events[1])
    assert [entry.seq for entry in snapshot.entries] == [2, 3, 4]
    assert behind.events[1].event == "snapshot"


async def test_a_sequence_number_from_the_future_is_invalid_request_before_any_stream(ca: DevCA) -> None:
    async with feed_server(ca) as server:
        await server.append(revoked(2))
        feed_id = server.feed.broadcaster.feed_id

        stream = await read_stream(server.context(), f"{server.url}?feed_id={feed_id}", headers={"Last-Event-ID": "9"})

    assert stream.status == 400
    assert stream.headers["Content-Type"].startswith("application/json")
    assert json.loads(stream.body)["error"] == "invalid_request"
    assert "beyond" in json.loads(stream.body)["error_description"]


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("?after=-1", {}),
        ("?after=01", {}),
        ("?after=1&after=1", {}),
        ("?after=x", {}),
        ("", {"Last-Event-ID": "1.5"}),
        ("?after=1", {"Last-Event-ID": "2"}),
        ("?feed_id=a%20b", {}),
    ],
    ids=["negative", "leading-zero", "repeated", "not-a-number", "header-not-a-number", "disagree", "bad-feed-id"],
)
async def test_a_malformed_position_is_invalid_request(ca: DevCA, query: str, headers: dict[str, str]) -> None:
    async with feed_server(ca) as server:
        await server.append(revoked(2))

        stream = await read_stream(server.context(), server.url + query, headers=headers)

    assert stream.status == 400
    assert json.loads(stream.body)["error"] == "invalid_request"


async def test_a_caller_without_a_client_certificate_is_refused_with_invalid_client(ca: DevCA) -> None:
    async with feed_server(ca) as server:
        stream = await read_stream(server.context(None), server.url)

    assert stream.status == 401
    assert json.loads(stream.body)["error"] == "invalid_client"
    assert stream.headers["WWW-Authenticate"].startswith("TLS")


async def test_a_caller_whose_certificate_does_not_chain_to_a_trusted_bundle_gets_no_stream(ca: DevCA) -> None:
    impostor = DevCA.ephemeral("example.org")  # the same name, another CA
    async with feed_server(ca) as server:
        svid = impostor.issue_x509_svid(SpiffeId.parse("spiffe://example.org/ns/shop/sa/web"), ttl=600)
        with pytest.raises(aiohttp.ClientError):
            await read_stream(client_context(svid, ca), server.url)


async def test_only_the_configured_spiffe_ids_may_follow(ca: DevCA) -> None:
    settings = FeedSettings(heartbeat=0.2, spiffe_ids=["spiffe://example.org/ns/verifiers/*", "spiffe://example.org/x"])
    async with feed_server(ca, settings=settings) as server:
        refused = await read_stream(server.context("/ns/shop/sa/web"), server.url)
        by_prefix = await read_stream(server.context("/ns/verifiers/api"), server.url, until=2)
        exact = await read_stream(server.context("/x"), server.url, until=2)

    assert refused.status == 403
    assert json.loads(refused.body)["error"] == "access_denied"
    assert by_prefix.status == exact.status == 200


async def test_heartbeat_comments_arrive_on_a_quiet_feed(ca: DevCA) -> None:
    async with feed_server(ca, settings=FeedSettings(heartbeat=0.1)) as server:
        stream = await read_stream(server.context(), server.url, until=4, comments=True)

    comments = [item for item in stream.items if isinstance(item, str)]
    assert comments
    assert comments[0].startswith("heartbeat ")


async def test_beyond_max_followers_a_follower_gets_503_with_retry_after(ca: DevCA) -> None:
    settings = FeedSettings(heartbeat=0.2, max_followers=1, retry_after=7)
    async with feed_server(ca, settings=settings) as server:
        first = asyncio.create_task(read_stream(server.context(), server.url, until=99, timeout=1.0))
        await until(lambda: len(server.feed.broadcaster) >= 1)

        second = await read_stream(server.context(), server.url)
        first.cancel()

    assert second.status == 503
    assert second.headers["Retry-After"] == "7"
    assert json.loads(second.body)["error"] == "temporarily_unavailable"


async def test_one_spiffe_id_cannot_take_more_than_its_share_of_the_places(ca: DevCA) -> None:
    settings = FeedSettings(heartbeat=0.2, max_followers=10, max_followers_per_id=1, retry_after=3)
    async with feed_server(ca, settings=settings) as server:
        first = asyncio.create_task(read_stream(server.context(), server.url, until=99, timeout=1.0))
        await until(lambda: len(server.feed.broadcaster) >= 1)

        same = await read_stream(server.context(), server.url)
        other = asyncio.create_task(read_stream(server.context("/ns/shop/sa/api"), server.url, until=99, timeout=1.0))
        await until(lambda: len(server.feed.broadcaster) >= 2)
        first.cancel()
        other.cancel()

    assert same.status == 503 and same.headers["Retry-After"] == "3"
    assert json.loads(same.body)["error"] == "temporarily_unavailable"


async def test_entries_reach_every_follower_and_a_quarantine_carries_no_reason(ca: DevCA) -> None:
    async with feed_server(ca) as server:
        readers = [asyncio.create_task(read_stream(server.context(), server.url, until=3)) for _ in range(3)]
        await until(lambda: len(server.feed.broadcaster) >= 3)
        at = datetime.now(UTC).replace(microsecond=0)
        pattern = SubjectPattern.parse("spiffe://example.org/ns/shop/*")
        await server.append([SubjectQuarantined(pattern, at, None, at + timedelta(hours=1), reason="leaked key")])
        streams = await asyncio.gather(*readers)

    for stream in streams:
        assert [event.event for event in stream.events] == ["hello", "snapshot", "subject.quarantined"]
        assert "leaked" not in stream.events[2].data
    assert len({stream.events[2].data for stream in streams}) == 1


async def test_shutting_down_releases_every_follower_at_once(ca: DevCA) -> None:
    async with feed_server(ca) as server:
        reader = asyncio.create_task(read_stream(server.context(), server.url, until=99, timeout=30))
        await until(lambda: len(server.feed.broadcaster) >= 1)
    loop = asyncio.get_running_loop()
    started = loop.time()

    stream = await reader

    assert stream.status == 200
    assert loop.time() - started < 5  # the stream ended with the server, not at the reader's timeout


async def test_a_store_with_a_new_feed_id_makes_every_follower_start_over(ca: DevCA) -> None:
    async with feed_server(ca) as server:
        reader = asyncio.create_task(read_stream(server.context(), server.url, until=99, timeout=10))
        await until(lambda: len(server.feed.broadcaster) >= 1)
        server.store.revocations._feed_id = "restored-elsewhere"  # as a store restored from another database
        await server.append(revoked(1))

        stream = await reader

    assert server.feed.broadcaster.feed_id == "restored-elsewhere"
    assert [event.event for event in stream.events] == ["hello", "snapshot"]  # closed before the new entry


async def test_the_token_service_advertises_the_feed_in_its_metadata_and_serves_it(ca: DevCA, tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    generate_kek_file(tmp_path / "kek")
    settings = load_settings(
        None, {"state_dir": tmp_path / "state", "store": {"url": "memory:"}, "keyring": {"kek_file": tmp_path / "kek"}}
    )
    source = InMemorySvidSource(ca, BROKER_ID)
    ctx = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    service = await start_stateful_token_service(
        settings, source=source, policy_store=FilePolicyStore(tmp_path / "policy.yaml"), issuer=ISSUER,
        listen_host="127.0.0.1", listen_port=0,
    )  # fmt: skip
    try:
        url = f"https://127.0.0.1:{service.port}"
        metadata = await request(ctx, "GET", f"{url}/.well-known/oauth-authorization-server")
        stream = await read_stream(ctx, f"{url}/v1/revocations", until=2)
    finally:
        await service.aclose()

    assert metadata.body["spiffe_broker_revocation_feed_endpoint"] == f"{ISSUER}/v1/revocations"
    assert [event.event for event in stream.events] == ["hello", "snapshot"]


async def test_a_token_app_without_the_feed_does_not_advertise_one(ca: DevCA, broker: Broker) -> None:
    ctx = client_context(None, ca)  # metadata needs no client certificate

    metadata = await request(ctx, "GET", f"{broker.url}/.well-known/oauth-authorization-server")

    assert metadata.status == 200
    assert "spiffe_broker_revocation_feed_endpoint" not in metadata.body


async def test_a_stream_outlives_the_listeners_idle_and_request_deadlines(ca: DevCA) -> None:
    limits = ListenerLimits(request_timeout=0.1, idle_timeout=0.1, handshake_timeout=1.0)
    async with feed_server(ca, settings=FeedSettings(heartbeat=0.05), limits=limits) as server:
        stream = await read_stream(server.context(), server.url, until=12, comments=True)

    assert len([item for item in stream.items if isinstance(item, str)]) >= 10  # 0.5 s of heartbeats


async def _raw_get(server: FeedServer, request: bytes, until_bytes: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=server.context())
    writer.write(request)
    received = b""
    async with asyncio.timeout(5):
        while until_bytes not in received:
            chunk = await reader.read(65536)
            if not chunk:
                break
            received += chunk
    writer.close()
    return received


@pytest.mark.parametrize("version", ["1.0", "1.1"])
async def test_live_entries_are_framed_for_the_followers_http_version(ca: DevCA, version: str) -> None:
    async with feed_server(ca) as server:
        feed_id = server.feed.broadcaster.feed_id
        request = f"GET /v1/revocations?feed_id={feed_id}&after=0 HTTP/{version}\r\nHost: b\r\n\r\n".encode()
        reading = asyncio.create_task(_raw_get(server, request, b"id: 1\n"))
        await until(lambda: len(server.feed.broadcaster) == 1)
        await server.append(revoked(1))
        received = await reading

    head, _, body = received.partition(b"\r\n\r\n")
    event = b"id: 1\nevent: token.revoked\ndata: "
    if version == "1.1":
        assert b"Transfer-Encoding: chunked" in head
        chunks = []
        while body:
            size, _, body = body.partition(b"\r\n")
            chunks.append(body[: int(size, 16)])
            assert body[int(size, 16) : int(size, 16) + 2] == b"\r\n"
            body = body[int(size, 16) + 2 :]
        assert chunks[-1].startswith(event) and chunks[-1].endswith(b"\n\n")
    else:
        assert b"Transfer-Encoding" not in head
        assert body.endswith(b"\n\n") and event in body and b"\r\n" not in body


async def test_a_feed_allow_list_entry_that_is_not_a_pattern_is_refused_at_start(ca: DevCA) -> None:
    with pytest.raises(ConfigError, match=r"feed\.spiffe_ids"):
        async with feed_server(ca, settings=FeedSettings(spiffe_ids=["https://not-spiffe"])):
            pass
