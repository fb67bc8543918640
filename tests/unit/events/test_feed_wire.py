"""The revocation feed's wire form: SSE parsing by the WHATWG examples, and each event written then read back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.events.feed import (
    FeedProtocolError,
    SseEvent,
    SseParser,
    entry_event,
    heartbeat_comment,
    hello_event,
    parse_entry,
    parse_hello,
    parse_snapshot,
    snapshot_event,
)
from broker.events.revocations import KeyRevoked, LogEntry, SubjectPattern, SubjectQuarantined, TokenRevoked

AT = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def parse(*chunks: bytes) -> list[SseEvent | str]:
    parser = SseParser()
    out: list[SseEvent | str] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out


def test_whatwg_example_data_lines_are_joined_with_line_feeds() -> None:
    assert parse(b"data: YHOO\ndata: +2\ndata: 10\n\n") == [SseEvent("message", "YHOO\n+2\n10", None)]


def test_whatwg_example_comments_ids_and_one_leading_space() -> None:
    stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"

    assert parse(stream) == [
        "test stream",
        SseEvent("message", "first event", "1"),
        SseEvent("message", "second event", ""),
        SseEvent("message", " third event", None),
    ]


def test_whatwg_example_empty_data_fields_and_an_unterminated_event() -> None:
    assert parse(b"data\n\ndata\ndata\n\ndata:") == [SseEvent("message", "", None), SseEvent("message", "\n", None)]


@pytest.mark.parametrize(
    "chunks",
    [
        (b"event: a\r\ndata: x\r\n\r\n",),
        (b"event: a\rdata: x\r\r",),
        (b"event: a\r", b"\ndata: x\r", b"\n\r", b"\n"),
        (b"\xef\xbb", b"\xbfevent: a\ndata: x\n\n"),
        (b"ev", b"ent: a\nda", b"ta: x\n", b"\n"),
    ],
    ids=["crlf", "cr", "crlf-split", "bom-split", "split-lines"],
)
def test_every_line_ending_and_any_chunking_give_the_same_event(chunks: tuple[bytes, ...]) -> None:
    assert parse(*chunks) == [SseEvent("a", "x", None)]


def test_an_id_with_a_null_is_ignored() -> None:
    assert parse(b"id: 1\x002\ndata: x\n\n") == [SseEvent("message", "x", None)]


def test_bytes_that_are_not_utf8_are_a_protocol_error() -> None:
    with pytest.raises(FeedProtocolError, match="UTF-8"):
        parse(b"data: \xff\n\n")


def test_an_event_beyond_the_size_limit_is_a_protocol_error_even_before_its_line_ends() -> None:
    parser = SseParser(max_event_bytes=100)
    parser.feed(b"data: " + b"x" * 50 + b"\n")

    with pytest.raises(FeedProtocolError, match="larger than 100"):
        parser.feed(b"data: " + b"y" * 60)


def test_the_size_limit_counts_one_event_at_a_time() -> None:
    parser = SseParser(max_event_bytes=100)

    events = [e for _ in range(10) for e in parser.feed(b"data: " + b"x" * 80 + b"\n\n")]

    assert len(events) == 10


ENTRIES = [
    LogEntry(1, TokenRevoked("jti-1", AT + timedelta(minutes=5))),
    LogEntry(2, KeyRevoked("kid-1", AT + timedelta(days=1))),
    LogEntry(3, SubjectQuarantined(SubjectPattern.parse("spiffe://td/ns/*"), AT, None, AT + timedelta(hours=1), "why")),
]


def test_hello_snapshot_and_entries_read_back_as_written() -> None:
    stream = hello_event("f-1", 3) + snapshot_event("f-1", 3, ENTRIES[:2]) + entry_event(ENTRIES[2])
    hello, snapshot, entry = parse(stream + heartbeat_comment(3))[:3]
    assert isinstance(hello, SseEvent) and isinstance(snapshot, SseEvent) and isinstance(entry, SseEvent)

    assert parse_hello(hello).feed_id == "f-1" and hello.id is None
    assert parse_snapshot(snapshot).entries == tuple(ENTRIES[:2])
    read = parse_entry(entry)
    assert read.seq == 3 and entry.event == "subject.quarantined"
    assert isinstance(read.event, SubjectQuarantined) and read.event.reason == ""  # the reason stays home
    assert "why" not in entry.data


def test_each_event_is_one_line_of_json() -> None:
    event = entry_event(LogEntry(7, TokenRevoked('a"\\b', AT)))

    assert event.count(b"\n") == 4 and b'"jti":"a\\"\\\\b"' in event


KEY_2 = '{"seq":2,"type":"key.revoked","kid":"k","exp":1}'


@pytest.mark.parametrize(
    "event",
    [
        SseEvent("snapshot", '{"feed_id":"f","head":2,"entries":[]}', "1"),
        SseEvent("snapshot", '{"feed_id":"f","head":1,"entries":[' + KEY_2 + "]}", "1"),
        SseEvent("snapshot", '{"feed_id":"f","head":1,"entries":[1]}', "1"),
        SseEvent("snapshot", '{"feed_id":"f","head":1,"entries":[],"extra":1}', "1"),
        SseEvent("snapshot", '{"feed_id":"f","head":-1,"entries":[]}', "-1"),
    ],
    ids=["id-not-head", "entry-above-head", "entry-not-object", "extra-member", "negative-head"],
)
def test_a_snapshot_that_is_not_exactly_what_the_server_writes_is_refused(event: SseEvent) -> None:
    with pytest.raises(FeedProtocolError):
        parse_snapshot(event)
