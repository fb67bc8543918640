"""The revocation feed follower: against the real feed over mTLS, and against scripted streams for strict parsing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker._backoff import Backoff
from broker.config import FeedSettings
from broker.devtools.devca import DevCA
from broker.events.revocations import KeyRevoked, LogEntry, SubjectPattern, SubjectQuarantined, SubjectReleased
from broker.identity.memory import InMemorySvidSource
from broker.verify.feed import RevocationFeedFollower, RevocationFeedStaleError
from broker.verify.feed_transport import FeedResponse
from tests.unit.server.feed_helpers import CLIENT_ID, FeedServer, feed_server, later, revoked, until
from tests.unit.server.token_service_helpers import BROKER_ID

FAST_RETRY = Backoff(initial=0.01, maximum=0.05, jitter="full")
NOW = datetime.now(UTC).timestamp()


@pytest.fixture
def ca() -> DevCA:
    return DevCA.ephemeral("example.org")


def follower_of(server: FeedServer, **options: Any) -> RevocationFeedFollower:
    source = InMemorySvidSource(server.ca, CLIENT_ID)
    options.setdefault("backoff", FAST_RETRY)
    return RevocationFeedFollower.over_mtls(issuer=server.issuer, source=source, server_id=BROKER_ID, **options)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[int], bool]] = []

    def __call__(self, entries: Sequence[LogEntry], snapshot: bool) -> None:
        self.calls.append(([entry.seq for entry in entries], snapshot))


async def test_a_follower_takes_a_snapshot_then_applies_live_entries_and_refuses_their_jtis(ca: DevCA) -> None:
    async with feed_server(ca) as server:
        await server.append(revoked(2))
        async with follower_of(server) as follower:
            recorder = Recorder()
            follower.subscribe(recorder)
            assert await follower.wait_synced(5)
            await server.append(revoked(3)[2:])
            await until(lambda: follower.index.seq == 3)

            refusal = follower.refusal(jti="jti-2", kid="k", subject=str(CLIENT_ID), issued_at=NOW)
            other = follower.refusal(jti="jti-9", kid="k", subject=str(CLIENT_ID), issued_at=NOW)

    assert (refusal, other) == ("revoked", None)
    assert recorder.calls == [([1, 2], True), ([3], False)]
    assert follower.status()["lag"] == 0 and follower.feed_id == server.feed.broadcaster.feed_id


async def test_a_follower_resumes_after_a_dropped_connection_without_a_snapshot_or_a_gap(ca: DevCA) -> None:
    async with feed_server(ca) as server:
        await server.append(revoked(2))
        async with follower_of(server) as follower:
            recorder = Recorder()
            follower.subscribe(recorder)
            await follower.wait_synced(5)
            server.feed.broadcaster.close_all()  # every stream ends; the entries below are appended meanwhile
            await server.append(revoked(2))
            await until(lambda: follower.index.seq == 4 and follower.connects >= 2)

    assert recorder.calls[1:] == [([3], False), ([4], False)]  # resumed from seq 2: no second snapshot


async def test_a_new_feed_id_makes_the_follower_start_over_from_a_snapshot(ca: DevCA) -> None:
    async with feed_server(ca) as server:
        await server.append(revoked(3))
        async with follower_of(server) as follower:
            recorder = Recorder()
            follower.subscribe(recorder)
            await follower.wait_synced(5)
            server.store.revocations._feed_id = "restored-elsewhere"
            server.store.revocations._entries = {}  # a different log: its only entry will be seq 4
            await server.append(revoked(1))
            await until(lambda: follower.feed_id == "restored-elsewhere")

    assert recorder.calls[-1] == ([4], True)
    assert follower.refusal(jti="jti-1", kid=None, subject=str(CLIENT_ID), issued_at=NOW) is None


async def test_a_stale_feed_fails_closed_by_default(ca: DevCA) -> None:
    async with feed_server(ca, settings=FeedSettings(heartbeat=0.05)) as server:
        follower = follower_of(server, stale_after=0.3)
        follower.start()
        await follower.wait_synced(5)
        fresh = follower.refusal(jti="x", kid=None, subject=str(CLIENT_ID), issued_at=NOW)
        await asyncio.sleep(0.5)  # heartbeats keep it fresh
        still_fresh = not follower.stale()
    await until(follower.stale)  # the server is gone

    with pytest.raises(RevocationFeedStaleError) as raised:
        follower.refusal(jti="x", kid=None, subject=str(CLIENT_ID), issued_at=NOW)
    await follower.aclose()
    assert fresh is None and still_fresh
    assert (raised.value.status, raised.value.error) == (503, "temporarily_unavailable")
    assert "revocation feed is stale" in raised.value.description


async def test_a_stale_feed_set_to_accept_still_refuses_what_it_knows(ca: DevCA) -> None:
    async with feed_server(ca) as server:
        await server.append(revoked(1))
        follower = follower_of(server, stale_after=0.2, on_stale="accept")
        follower.start()
        await follower.wait_synced(5)
    await until(follower.stale)

    known = follower.refusal(jti="jti-0", kid=None, subject=str(CLIENT_ID), issued_at=NOW)
    unknown = follower.refusal(jti="other", kid=None, subject=str(CLIENT_ID), issued_at=NOW)
    await follower.aclose()
    assert (known, unknown) == ("revoked", None)


async def test_before_its_first_contact_a_fail_closed_follower_refuses() -> None:
    follower = RevocationFeedFollower(issuer="https://broker.test", fetch_json=_never, open_feed=Script([]))

    with pytest.raises(RevocationFeedStaleError):
        follower.refusal(jti="x", kid=None, subject=str(CLIENT_ID), issued_at=NOW)


async def test_an_issuer_without_a_feed_is_not_followed_and_nothing_is_refused_for_it(ca: DevCA) -> None:
    async with feed_server(ca, advertise=False) as server, follower_of(server) as follower:
        assert await follower.wait_synced(5)

        assert follower.advertised is False and not follower.stale()
        assert follower.refusal(jti="x", kid=None, subject=str(CLIENT_ID), issued_at=NOW) is None
        assert follower.connects == 0


async def test_quarantine_and_release_and_the_cutoff_that_outlives_the_release(ca: DevCA) -> None:
    async with feed_server(ca) as server, follower_of(server) as follower:
        await follower.wait_synced(5)
        at = datetime.now(UTC).replace(microsecond=0)
        pattern = SubjectPattern.parse("spiffe://example.org/ns/shop/*")
        await server.append([SubjectQuarantined(pattern, at, None, at + timedelta(hours=1))])
        await until(lambda: follower.index.seq == 1)
        during = follower.refusal(jti="new", kid=None, subject=str(CLIENT_ID), issued_at=at.timestamp() + 5)
        await server.append([SubjectReleased(pattern, at + timedelta(seconds=2))])
        await until(lambda: follower.index.seq == 2)
        old = follower.refusal(jti="old", kid=None, subject=str(CLIENT_ID), issued_at=at.timestamp() - 5)
        new = follower.refusal(jti="new", kid=None, subject=str(CLIENT_ID), issued_at=at.timestamp() + 5)

    assert (during, old, new) == ("quarantined", "quarantined", None)


class RevokedKeys:
    def __init__(self) -> None:
        self.kids: list[str] = []

    def revoke(self, kid: str) -> None:
        self.kids.append(kid)


async def test_a_revoked_kid_is_dropped_from_the_jwks_cache(ca: DevCA) -> None:
    jwks = RevokedKeys()
    async with feed_server(ca) as server:
        await server.append([KeyRevoked("old-key", later())])
        async with follower_of(server, jwks=jwks) as follower:
            await follower.wait_synced(5)
            await server.append([KeyRevoked("new-key", later())])
            await until(lambda: follower.index.seq == 2)

    assert jwks.kids == ["old-key", "new-key"]
    assert follower.refusal(jti=None, kid="new-key", subject=str(CLIENT_ID), issued_at=NOW) == "key_revoked"


# -- strict parsing, against scripted streams ------------------------------------------------------------------


async def _never(url: str) -> object:
    raise AssertionError("not called")


HELLO = b'event: hello\ndata: {"feed_id":"f1","head":1}\n\n'
SNAPSHOT = b'id: 1\nevent: snapshot\ndata: {"feed_id":"f1","head":1,"entries":[]}\n\n'


def entry(seq: int, jti: str = "j") -> bytes:
    data = b'{"seq":%d,"type":"token.revoked","jti":"%s","exp":4102444800}' % (seq, jti.encode())
    return b"id: %d\nevent: token.revoked\ndata: %s\n\n" % (seq, data)


@dataclass
class Scripted:
    status: int
    body: list[bytes]
    headers: Mapping[str, str] = field(default_factory=lambda: {"Content-Type": "text/event-stream"})
    ends: bool = False  # the server ends the stream after the body (else it stays open)

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self.body:
            yield chunk
        if not self.ends:
            await asyncio.sleep(3600)

    async def read_body(self, limit: int) -> bytes:
        return b"".join(self.body)[:limit]


class Script:
    """An opener serving one scripted response per connection; records each request's URL and headers."""

    def __init__(self, responses: list[Scripted]) -> None:
        self.responses = responses
        self.requests: list[tuple[str, dict[str, str]]] = []

    @contextlib.asynccontextmanager
    async def __call__(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[FeedResponse]:
        self.requests.append((url, dict(headers)))
        if not self.responses:
            await asyncio.sleep(3600)
        yield self.responses.pop(0)


async def _metadata(url: str) -> object:
    return {"issuer": "https://broker.test", "spiffe_broker_revocation_feed_endpoint": "https://broker.test/feed"}


async def scripted(*responses: Scripted) -> tuple[RevocationFeedFollower, Script]:
    script = Script(list(responses))
    follower = RevocationFeedFollower(
        issuer="https://broker.test", fetch_json=_metadata, open_feed=script, backoff=FAST_RETRY
    )
    follower.start()
    return follower, script


@pytest.mark.parametrize(
    "bad",
    [
        [entry(1)],  # an entry before hello
        [HELLO, entry(1)],  # an entry before the snapshot a follower without state needs
        [HELLO, SNAPSHOT, entry(3)],  # a gap
        [HELLO, SNAPSHOT, b"id: 2\nevent: token.revoked\ndata: {not json\n\n"],
        [HELLO, SNAPSHOT, b'id: 2\nevent: token.revoked\ndata: {"seq":2,"type":"key.revoked","kid":"k","exp":1}\n\n'],
        [HELLO, SNAPSHOT, b"id: 9\n" + entry(2)[6:]],  # id and seq disagree
        [HELLO, SNAPSHOT, b"event: token.revoked\ndata: \xff\xfe\n\n"],
        [HELLO, HELLO],
        [b'event: hello\ndata: {"feed_id":"f 1","head":1}\n\n'],
        [HELLO, b'id: 1\nevent: snapshot\ndata: {"feed_id":"f2","head":1,"entries":[]}\n\n'],
        [HELLO, SNAPSHOT, b": heartbeat 5\n\n"],  # the replica is at 5: entries 2-4 went missing on this stream
    ],
    ids=[
        *("before-hello", "before-snapshot", "gap", "not-json", "type-mismatch", "id-mismatch", "not-utf8"),
        *("two-hellos", "bad-feed-id", "snapshot-of-another-feed", "heartbeat-ahead"),
    ],
)
async def test_a_malformed_stream_ends_the_connection_and_the_follower_reconnects(bad: list[bytes]) -> None:
    good = Scripted(200, [HELLO, SNAPSHOT, entry(2, "after")])

    follower, script = await scripted(Scripted(200, bad), good)
    await until(lambda: follower.index.seq == 2)
    await follower.aclose()

    assert len(script.requests) == 2  # the bad stream, then the good one (still open)
    assert follower.refusal(jti="after", kid=None, subject="spiffe://example.org/a", issued_at=NOW) == "revoked"


async def test_unknown_event_types_and_comments_are_ignored() -> None:
    body = [
        HELLO,
        SNAPSHOT,
        b": hi\n\n: heartbeat 1\n\nevent: future.thing\ndata: {}\n\n",
        entry(2),
        b": heartbeat 2\n\n",
    ]

    follower, script = await scripted(Scripted(200, body))
    await until(lambda: follower.index.seq == 2)
    await follower.aclose()

    assert len(script.requests) == 1  # still on the first stream


async def test_a_400_makes_the_follower_start_over_without_its_position() -> None:
    refused = Scripted(400, [b'{"error":"invalid_request"}'], {"Content-Type": "application/json"})
    first = Scripted(200, [HELLO, SNAPSHOT, entry(2)], ends=True)

    follower, script = await scripted(first, refused, Scripted(200, [HELLO, SNAPSHOT]))
    await until(lambda: len(script.requests) >= 3)
    await follower.aclose()

    (_, first_headers), (second_url, second_headers), (third_url, third_headers) = script.requests[:3]
    assert "Last-Event-ID" not in first_headers
    assert second_headers["Last-Event-ID"] == "2" and second_url.endswith("?feed_id=f1")
    assert "Last-Event-ID" not in third_headers and third_url == "https://broker.test/feed"


async def test_a_stream_that_is_not_an_event_stream_is_refused() -> None:
    json_body = Scripted(200, [b"{}"], {"Content-Type": "application/json"})

    follower, script = await scripted(json_body, Scripted(200, [HELLO, SNAPSHOT]))
    await until(lambda: follower.feed_id == "f1")
    await follower.aclose()

    assert len(script.requests) >= 2


async def test_an_event_larger_than_the_limit_ends_the_connection() -> None:
    script = Script([Scripted(200, [HELLO, b"data: " + b"x" * 5000]), Scripted(200, [HELLO, SNAPSHOT])])
    follower = RevocationFeedFollower(
        issuer="https://broker.test", fetch_json=_metadata, open_feed=script, backoff=FAST_RETRY, max_event_bytes=1000
    )
    follower.start()
    await until(lambda: follower.feed_id == "f1")
    await follower.aclose()

    assert len(script.requests) >= 2


async def test_a_huge_retry_after_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("broker.verify.feed.MAX_RETRY_AFTER", 0.05)
    busy = Scripted(503, [b'{"error":"temporarily_unavailable"}'], {"Content-Type": "application/json",
                                                                    "Retry-After": "86400"})  # fmt: skip

    follower, script = await scripted(busy, Scripted(200, [HELLO, SNAPSHOT]))
    await until(lambda: follower.feed_id == "f1")  # within the helper's bound, not a day
    await follower.aclose()

    assert len(script.requests) == 2
