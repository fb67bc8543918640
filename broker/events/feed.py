"""The revocation feed's wire form: the revocation log as Server-Sent Events (issue 10).

WHATWG HTML, "Server-sent events" (§9.2): a ``text/event-stream`` response of UTF-8 lines; an event is a block of
``field: value`` lines ended by a blank line; a line starting with ``:`` is a comment. The feed sends, in order:

1. ``event: hello`` (no ``id``, so a follower's last event ID is unchanged), ``data: {"feed_id", "head"}``: which
   log this is and its last sequence number when the follower was attached (the follower's lag is ``head - seq``);
2. when the follower starts over (it sent no position, one below the log's horizon, or another ``feed_id``):
   ``event: snapshot``, ``id: <head>``, ``data: {"feed_id", "head", "entries": [...]}``, every entry that still
   cuts something off, each in the form of :func:`~broker.events.revocations.entry_to_wire`;
3. every later entry, in ``seq`` order without gaps: ``id: <seq>``, ``event: <type>`` (``token.revoked``,
   ``subject.quarantined``, ``subject.released``, ``key.revoked``), ``data: <entry_to_wire JSON>``;
4. a comment line every heartbeat interval (``: heartbeat <head>``), so a follower can tell a quiet feed from a
   dead one.

A follower resumes with ``Last-Event-ID: <seq>`` (the header of §9.2.4, which a browser's ``EventSource`` sends
on its own) and ``?feed_id=<id>``. JSON is written compact and ASCII-only (``json.dumps`` escapes every control
character), so each event's data is one line.

:class:`SseParser` is the follower's reading of the stream: the §9.2.6 algorithm ("Interpreting an event stream":
CRLF, LF or CR line ends, a leading BOM dropped, one space after the colon removed, ``data`` lines joined with
LF), strict where the spec is lax: bytes that are not UTF-8, or an event larger than ``max_event_bytes``, are a
:class:`FeedProtocolError` instead of being replaced or buffered without end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.events.revocations import LogEntry, entry_from_wire, entry_to_wire

__all__ = [
    "CONTENT_TYPE",
    "ENTRY_EVENTS",
    "EVENT_HELLO",
    "EVENT_SNAPSHOT",
    "FEED_ID",
    "FEED_PATH",
    "METADATA_KEY",
    "SEQ",
    "FeedProtocolError",
    "Hello",
    "Snapshot",
    "SseEvent",
    "SseParser",
    "entry_event",
    "heartbeat_comment",
    "hello_event",
    "parse_entry",
    "parse_hello",
    "parse_snapshot",
    "snapshot_event",
]

FEED_PATH = "/v1/revocations"
METADATA_KEY = "spiffe_broker_revocation_feed_endpoint"  # in the issuer's RFC 8414 metadata (§2: extensions)
CONTENT_TYPE = "text/event-stream"
EVENT_HELLO = "hello"
EVENT_SNAPSHOT = "snapshot"
ENTRY_EVENTS = frozenset(
    {"token.revoked", "subject.quarantined", "subject.released", "key.revoked", "exception.withdrawn"}
)
FEED_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
SEQ = re.compile(r"0|[1-9][0-9]{0,17}")  # a decimal sequence number, no sign, no leading zeros, < 10**18
_COMPACT = (",", ":")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class FeedProtocolError(ValueError):
    """The stream is not a revocation feed as this module writes it; the follower reconnects."""


def _json(value: object) -> bytes:
    return json.dumps(value, separators=_COMPACT).encode()


def _event(event: str, data: bytes, seq: int | None = None) -> bytes:
    head = b"" if seq is None else b"id: %d\n" % seq
    return head + b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def hello_event(feed_id: str, head: int) -> bytes:
    return _event(EVENT_HELLO, _json({"feed_id": feed_id, "head": head}))


def snapshot_event(feed_id: str, head: int, entries: Iterable[LogEntry]) -> bytes:
    document = {"feed_id": feed_id, "head": head, "entries": [entry_to_wire(entry) for entry in entries]}
    return _event(EVENT_SNAPSHOT, _json(document), head)


def entry_event(entry: LogEntry) -> bytes:
    wire = entry_to_wire(entry)
    return _event(str(wire["type"]), _json(wire), entry.seq)


def heartbeat_comment(head: int) -> bytes:
    return b": heartbeat %d\n\n" % head


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: its type (``message`` if none was given), data, and the ``id`` field it carried."""

    event: str
    data: str
    id: str | None


@dataclass(frozen=True, slots=True)
class Hello:
    feed_id: str
    head: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    feed_id: str
    head: int
    entries: tuple[LogEntry, ...]


def _object(data: str) -> Mapping[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the interpreter's recursion limit
        raise FeedProtocolError("event data is not JSON") from None
    if not isinstance(value, dict):
        raise FeedProtocolError("event data is not a JSON object")
    return value


def _position(document: Mapping[str, Any]) -> tuple[str, int]:
    feed_id, head = document.get("feed_id"), document.get("head")
    if not isinstance(feed_id, str) or not FEED_ID.fullmatch(feed_id):
        raise FeedProtocolError("feed_id is missing or malformed")
    if type(head) is not int or head < 0:
        raise FeedProtocolError("head is not a non-negative integer")
    return feed_id, head


def parse_hello(event: SseEvent) -> Hello:
    document = _object(event.data)
    if set(document) != {"feed_id", "head"}:
        raise FeedProtocolError("hello has other members than feed_id and head")
    return Hello(*_position(document))


def parse_snapshot(event: SseEvent) -> Snapshot:
    document = _object(event.data)
    if set(document) != {"feed_id", "head", "entries"} or not isinstance(document["entries"], list):
        raise FeedProtocolError("snapshot is not {feed_id, head, entries}")
    feed_id, head = _position(document)
    if event.id != str(head):
        raise FeedProtocolError("snapshot id is not its head")
    try:
        entries = tuple(entry_from_wire(item) for item in document["entries"] if isinstance(item, dict))
    except ValueError as exc:
        raise FeedProtocolError(f"snapshot entry refused: {exc}") from None
    if len(entries) != len(document["entries"]) or any(entry.seq > head for entry in entries):
        raise FeedProtocolError("snapshot entries are not entries at or below its head")
    return Snapshot(feed_id, head, entries)


def parse_entry(event: SseEvent) -> LogEntry:
    """An entry event: its data must be an entry of its own ``event`` type, with ``id`` equal to its ``seq``."""
    try:
        entry = entry_from_wire(_object(event.data))
    except ValueError as exc:
        raise FeedProtocolError(f"entry refused: {exc}") from None
    if entry_to_wire(entry)["type"] != event.event or event.id != str(entry.seq):
        raise FeedProtocolError("entry's event type or id does not match its data")
    return entry


class SseParser:
    """WHATWG §9.2.6 over chunks of bytes: :meth:`feed` returns the events and comments completed by a chunk."""

    def __init__(self, *, max_event_bytes: int = 64 * 1024 * 1024) -> None:
        self._max = max_event_bytes
        self._pending: list[bytes] = []  # the parts of an incomplete line
        self._pending_size = 0
        self._size = 0  # bytes of the lines of the event being read
        self._started = False
        self._skip_lf = False  # the last chunk ended in CR: a LF starting the next one belongs to it
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SseEvent | str]:
        """The events (and comments, as ``str``) this chunk completes; :class:`FeedProtocolError` if malformed."""
        if not chunk:
            return []  # else a CR ending the last chunk would no longer join a LF starting the next one
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = False
        if not self._started:
            chunk, self._pending = b"".join(self._pending) + chunk, []
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._pending = [chunk]  # maybe the start of a byte order mark
                return []
            self._started = True
            chunk = chunk.removeprefix(_BOM)
        out: list[SseEvent | str] = []
        start = 0
        for match in _LINE_END.finditer(chunk):  # only the new bytes are scanned: a long event is read in O(n)
            if match.group() == b"\r" and match.end() == len(chunk):
                self._skip_lf = True  # CR at the very end: maybe the first half of a CRLF
            self._pending.append(chunk[start : match.start()])
            line, self._pending = b"".join(self._pending), []
            self._line(line, out)
            start = match.end()
        if start < len(chunk):
            self._pending.append(chunk[start:])
            self._pending_size += len(chunk) - start
        if self._size + self._pending_size > self._max:
            raise FeedProtocolError(f"an event is larger than {self._max} bytes")
        return out

    def _line(self, raw: bytes, out: list[SseEvent | str]) -> None:
        self._pending_size = 0
        self._size += len(raw) + 1
        if self._size > self._max:
            raise FeedProtocolError(f"an event is larger than {self._max} bytes")
        try:
            line = raw.decode()
        except UnicodeDecodeError:
            raise FeedProtocolError("the stream is not UTF-8") from None
        if not line:
            self._dispatch(out)
            return
        if line.startswith(":"):
            out.append(line[1:].removeprefix(" "))
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        # "retry" and unknown fields are ignored (§9.2.6); the follower keeps its own backoff

    def _dispatch(self, out: list[SseEvent | str]) -> None:
        if self._data:
            out.append(SseEvent(self._event or "message", "\n".join(self._data), self._id))
        self._event, self._data, self._id, self._size = "", [], None, 0
