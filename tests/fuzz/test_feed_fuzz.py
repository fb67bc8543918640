"""Fuzzing the revocation feed from both ends.

**The endpoint** (``GET /v1/revocations`` on the stateful token service, SQLite store, real mTLS), with mutated
``Last-Event-ID`` headers (repeated, empty, padded, malformed, from the future), ``?after`` and ``?feed_id``
values, other headers and callers. Each request's answer is predicted by the feed's contract
(:mod:`broker.server.feed`): never a 5xx; no certificate 401 ``invalid_client``; a caller outside ``[feed]
spiffe_ids`` 403 ``access_denied``; a malformed, repeated or disagreeing position 400 ``invalid_request``; a
position beyond the log's head (of this log, or of none named) 400 ``invalid_request``; otherwise a stream that
starts with ``hello`` (the log's ``feed_id`` and head), then the snapshot or exactly the entries after the
position, as the store holds them, in the feed's SSE form (read by an independent reader, :mod:`feed_http`).
The canary in every request never comes back nor reaches a log line.

**The follower** (:class:`~broker.events.feed.SseParser` and :class:`~broker.verify.feed.RevocationFeedFollower`)
fed valid streams in random chunks (the same result as one chunk), hostile edits of them (gaps, duplicates,
reordering, a second ``hello``, bad JSON, bad UTF-8, mismatched ids and types, events over the size limit,
overlong lines), and random bytes: it never raises anything but :class:`~broker.events.feed.FeedProtocolError`
(the follower: never logs an unexpected exception), and its index is always one that a prefix of the valid
stream gives (:mod:`feed_streams`).

Hypothesis: 120 endpoint requests, 150-300 examples per follower property (the follower runs in memory).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.events.feed import FeedProtocolError, SseEvent, SseParser, parse_entry, parse_hello, parse_snapshot
from broker.events.revocations import (
    KeyRevoked,
    RevocationEvent,
    SubjectPattern,
    SubjectQuarantined,
    SubjectReleased,
    TokenRevoked,
    entry_to_wire,
)
from broker.server.feed import FEED
from tests.fuzz.feed_edits import DEEP, LIMIT, VARIANTS, chunkings, fatal_edits, ignored_edits
from tests.fuzz.feed_http import FeedReply, open_feed, sse_blocks
from tests.fuzz.feed_streams import Event, follow_once, prefix_states, valid_streams
from tests.fuzz.stateful_service_thread import StatefulThread, stateful_service

__all__ = ["stateful_service"]  # fixture used by name

CANARY = "CANARY-fd-0c37"
SERVER = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MEMORY = settings(SERVER, max_examples=300)
_SEQ = re.compile(r"0|[1-9][0-9]{0,17}")
_FEED_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


# -- the endpoint ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedLog:
    feed_id: str
    head: int
    wire: dict[int, dict[str, Any]]  # seq -> entry_to_wire, as the store holds it
    snapshot: list[dict[str, Any]]


@pytest.fixture(scope="module")
def feed_log(stateful_service: StatefulThread) -> FeedLog:
    """Fifteen entries of every kind on the log, and the replica's feed caught up with them."""
    later = datetime.now(UTC) + timedelta(hours=2)
    now = datetime.now(UTC)
    pattern = SubjectPattern.parse("spiffe://example.org/fuzz/feed/*")
    events: list[RevocationEvent] = [TokenRevoked(f"jti-{i}", later) for i in range(10)]
    events += [KeyRevoked("kid-1", later), SubjectQuarantined(pattern, now, None, later), SubjectReleased(pattern, now)]
    events += [SubjectQuarantined(pattern, now, later, later), TokenRevoked("jti-last", later)]
    log = stateful_service.running.state.store.revocations
    stateful_service.run(log.append(events))
    broadcaster = stateful_service.running.app[FEED].broadcaster

    async def caught_up() -> tuple[str, int]:
        await broadcaster.reach(len(events), 5.0)
        return broadcaster.feed_id, broadcaster.head

    feed_id, head = stateful_service.run(caught_up())
    assert head == len(events)
    entries = stateful_service.entries_after(0)
    snapshot = stateful_service.run(log.snapshot(datetime.now(UTC)))
    return FeedLog(feed_id, head, {e.seq: entry_to_wire(e) for e in entries},
                   [entry_to_wire(e) for e in snapshot.entries])  # fmt: skip


_PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24)
_MALFORMED = ["-1", "+1", "01", "00", "1.0", "0x1", "1e3", "1_0", "1 2", str(10**18), "9" * 19, CANARY, "\u0661"]


def seq_values(head: int) -> st.SearchStrategy[str]:
    valid = st.integers(0, head).map(str)
    future = st.integers(head + 1, 10**18 - 1).map(str)
    return st.one_of(valid, valid, future, st.sampled_from(_MALFORMED), _PRINTABLE)


@st.composite
def feed_requests(draw: st.DrawFn, log: FeedLog) -> tuple[str | None, bytes, dict[str, Any]]:
    """(caller, raw request, the model's inputs)."""
    caller = draw(st.sampled_from(["owner", "rs", "other"] * 3 + ["admin", "outsider", None]))
    method = draw(st.sampled_from(["GET"] * 16 + ["POST", "HEAD", "PUT"]))
    pad = st.sampled_from(["", " ", "\t", "  "])
    if draw(st.integers(0, 9)) < 4:  # a follower resuming: one position (header, query or both), its own log's id
        position = str(draw(st.integers(0, log.head + 2)))
        where = draw(st.sampled_from(["header", "after", "both"]))
        headers = [draw(pad) + position + draw(pad)] if where != "after" else []
        after = [position] if where != "header" else []
        feed_ids = draw(st.sampled_from([[log.feed_id], [log.feed_id], []]))
    else:
        headers = draw(st.lists(st.tuples(pad, seq_values(log.head), pad).map("".join), max_size=2))
        after = draw(st.lists(seq_values(log.head), max_size=2))
        feed_ids = draw(st.lists(st.sampled_from([log.feed_id, "other-feed", CANARY, "", "a b", "x" * 129, "\u00e9",
                                                  "a/b"]) | _PRINTABLE, max_size=2))  # fmt: skip
    pairs = [("after", v) for v in after] + [("feed_id", v) for v in feed_ids]
    pairs += draw(st.lists(st.sampled_from([("x", CANARY), (CANARY, "1"), ("retry", "1")]), max_size=1))
    pairs = draw(st.permutations(pairs))
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]))
    lines = [f"{method} /v1/revocations{'?' + query if query else ''} {version}", "Host: broker.test"]
    name = draw(st.sampled_from(["Last-Event-ID", "last-event-id", "LAST-EVENT-ID"]))
    lines += [f"{name}: {value}" for value in headers]
    lines += draw(st.lists(st.sampled_from(["Accept: text/event-stream", "Accept: */*", f"X-Note: {CANARY}",
                                            "Cache-Control: no-cache", f"Accept: {CANARY}"]), max_size=3))  # fmt: skip
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return caller, raw, {"method": method, "headers": headers, "after": after, "feed_ids": feed_ids}


def predict(caller: str | None, model: dict[str, Any], log: FeedLog) -> tuple[int, str, int | None]:
    """(status, error, start): start None for a snapshot, else the seq the entries follow."""
    if model["method"] not in ("GET", "HEAD"):
        return 405, "invalid_request", None
    if model["method"] == "HEAD":
        return 405, "", None  # no body: a stream has nothing to show without its content
    if caller is None:
        return 401, "invalid_client", None
    if caller not in ("owner", "rs", "other"):
        return 403, "access_denied", None
    headers, after, feed_ids = model["headers"], model["after"], model["feed_ids"]
    if len(headers) > 1 or len(after) > 1 or len(feed_ids) > 1:
        return 400, "invalid_request", None
    header = (headers[0].strip(" \t") or None) if headers else None
    query = after[0] if after else None
    feed_id = feed_ids[0] if feed_ids else None
    if any(v is not None and not _SEQ.fullmatch(v) for v in (header, query)) or (header and query and header != query):
        return 400, "invalid_request", None
    if feed_id is not None and not _FEED_ID.fullmatch(feed_id):
        return 400, "invalid_request", None
    position = int(header or query or 0)
    if position == 0 or (feed_id is not None and feed_id != log.feed_id):
        return 200, "", None
    return (400, "invalid_request", None) if position > log.head else (200, "", position)


def check_stream(reply: FeedReply, start: int | None, log: FeedLog) -> None:
    assert reply.header("Content-Type") == "text/event-stream" and reply.header("Cache-Control") == "no-store"
    events = [block for block in sse_blocks(reply.body) if set(block) != {":"}]
    hello, rest = events[0], events[1:]
    assert set(hello) == {"event", "data"} and hello["event"] == ["hello"]
    assert json.loads(hello["data"][0]) == {"feed_id": log.feed_id, "head": log.head}
    if start is None:
        (snapshot,) = rest
        assert (snapshot["id"], snapshot["event"]) == ([str(log.head)], ["snapshot"])
        assert json.loads(snapshot["data"][0]) == {"feed_id": log.feed_id, "head": log.head, "entries": log.snapshot}
        return
    assert [block["id"] for block in rest] == [[str(seq)] for seq in range(start + 1, log.head + 1)]
    for block in rest:
        wire = log.wire[int(block["id"][0])]
        assert block["event"] == [wire["type"]] and json.loads(block["data"][0]) == wire


@SERVER
@given(data=st.data())
def test_mutated_feed_requests_get_the_answer_the_contract_gives(
    stateful_service: StatefulThread, feed_log: FeedLog, data: st.DataObject
) -> None:
    caller, raw, model = data.draw(feed_requests(feed_log))
    status, error, start = predict(caller, model, feed_log)
    want = 2 if start is None else 1 + feed_log.head - start
    reply = open_feed(stateful_service.context(caller), stateful_service.port, raw, want=want, timeout=3.0)
    assert CANARY.encode() not in reply.head + reply.body
    assert reply.status == status, (reply.status, reply.body[:200], model)
    if status != 200:
        if error:
            assert json.loads(reply.body)["error"] == error
        return
    check_stream(reply, start, feed_log)


def test_head_is_405_never_a_stream(stateful_service: StatefulThread) -> None:
    """Found by this fuzz: HEAD was served the stream (RFC 9110 §9.3.2: a HEAD answer has no content), its first
    events unchunked and its heartbeats chunked, so a keep-alive client read them as its next answer."""
    raw = b"HEAD /v1/revocations HTTP/1.1\r\nHost: b\r\n\r\n"
    reply = open_feed(stateful_service.context("owner"), stateful_service.port, raw, want=1, timeout=1.0)
    assert (reply.status, reply.header("Allow"), reply.body) == (405, "GET", b"")


def test_no_canary_reached_any_log(stateful_service: StatefulThread) -> None:
    """After the endpoint fuzz (file order): every record of the run, DEBUG included (and one refusal of its own)."""
    raw = f"GET /v1/revocations?feed_id={CANARY} HTTP/1.1\r\nHost: b\r\nLast-Event-ID: {CANARY}\r\n\r\n".encode()
    assert open_feed(stateful_service.context("owner"), stateful_service.port, raw, want=1).status == 400
    lines = stateful_service.logs.lines
    assert any("GET /v1/revocations refused" in line for line in lines), "the recorder missed the refusal"
    assert [line[:200] for line in lines if CANARY in line] == []
    assert [line[:300] for line in lines if "Traceback" in line or " unexpected " in line] == []


# -- the follower ----------------------------------------------------------------------------------------------


def parse_all(chunks: list[bytes]) -> list[SseEvent | str] | str:
    """Everything the parser gives for ``chunks``, or ``"error"`` if it refused the stream."""
    parser, out = SseParser(max_event_bytes=LIMIT), []
    try:
        for chunk in chunks:
            out += parser.feed(chunk)
    except FeedProtocolError:
        return "error"
    return out


@MEMORY
@given(events=valid_streams(), variant=st.sampled_from(sorted(VARIANTS)), data=st.data())
def test_a_valid_stream_in_random_chunks_parses_and_follows_as_in_one_chunk(
    events: list[Event], variant: str, data: st.DataObject
) -> None:
    stream = VARIANTS[variant](b"".join(event.raw for event in events))
    chunks = data.draw(chunkings(stream))
    whole = parse_all([stream])
    assert whole != "error"
    assert parse_all(chunks) == whole
    state, errors = follow_once(chunks, max_event_bytes=10 * LIMIT)
    assert errors == []
    assert state == prefix_states(events)[-1]


@MEMORY
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=8))
def test_random_bytes_in_any_chunking_are_refused_or_parsed_alike_and_never_crash_the_follower(
    data: bytes, cuts: list[int]
) -> None:
    points = sorted(min(c, len(data)) for c in cuts)
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole, pieces = parse_all([data]), parse_all(chunks)
    assert pieces == whole  # an event of the same bytes is refused (or read) however they arrive
    _, errors = follow_once(chunks, max_event_bytes=LIMIT)
    assert errors == []


@MEMORY
@given(events=valid_streams(), fatal=st.booleans(), data=st.data())
def test_a_hostile_edit_of_a_valid_stream_leaves_a_state_a_valid_prefix_gives(
    events: list[Event], fatal: bool, data: st.DataObject
) -> None:
    states = prefix_states(events)
    if fatal:
        raws, kind, cut = data.draw(fatal_edits(events))
        allowed = states[: cut + 1]
    else:
        raws, kind = data.draw(ignored_edits(events))
        allowed = states[-1:]
    chunks = data.draw(chunkings(b"".join(raws)))
    state, errors = follow_once(chunks, max_event_bytes=LIMIT)
    assert errors == [], kind
    assert state in allowed, kind


@MEMORY
@given(events=valid_streams(), junk=st.binary(min_size=1, max_size=200), data=st.data())
def test_random_bytes_between_the_events_of_a_valid_stream_never_give_a_state_no_prefix_gives(
    events: list[Event], junk: bytes, data: st.DataObject
) -> None:
    raws = [event.raw for event in events]
    raws.insert(data.draw(st.integers(0, len(raws))), junk)
    state, errors = follow_once(data.draw(chunkings(b"".join(raws))), max_event_bytes=LIMIT)
    assert errors == []
    assert state in prefix_states(events)


_JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
).map(json.dumps)
_HOSTILE_DATA = st.one_of(
    _JSON_TEXT,
    st.text(max_size=200),
    st.sampled_from(["1" * 5000, '{"feed_id":"f1","head":1e999}', "\x00", '{"seq":1,"seq":2}']),
    st.sampled_from(["-1", "1.0", "1" * 30]).map(lambda n: f'{{"feed_id":"f1","head":{n},"entries":[]}}'),
)


def test_an_empty_chunk_between_a_cr_and_its_lf_changes_nothing() -> None:
    """Found by this fuzz: an empty chunk made the LF of a CRLF split across chunks a second line end, which
    dispatched the event early (here: its type lost, and a hello read as a message)."""
    stream = b'event: hello\r\ndata: {"feed_id":"f1","head":0}\r\n\r\n'
    cut = stream.index(b"\r") + 1
    assert parse_all([stream[:cut], b"", stream[cut:]]) == parse_all([stream])


@pytest.mark.parametrize("data", ["[" * DEEP, '{"a":' * DEEP, '{"feed_id":"f1","head":1,"entries":' + "[" * DEEP],
                         ids=["deep-array", "deep-object", "deep-entries"])  # fmt: skip
def test_json_nested_beyond_the_recursion_limit_is_a_protocol_error(data: str) -> None:
    for parse in (parse_hello, parse_snapshot, parse_entry):
        with pytest.raises(FeedProtocolError):
            parse(SseEvent("snapshot", data, "1"))


@MEMORY
@given(data=_HOSTILE_DATA, seq=st.none() | st.sampled_from(["1", "0", "-1", "x"]))
def test_hostile_event_data_is_a_protocol_error_and_nothing_else(data: str, seq: str | None) -> None:
    for parse, event in ((parse_hello, "hello"), (parse_snapshot, "snapshot"), (parse_entry, "token.revoked")):
        with contextlib.suppress(FeedProtocolError):  # anything else fails the test
            parse(SseEvent(event, data, seq))
