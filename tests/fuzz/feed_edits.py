"""Hostile edits of valid revocation feed streams (:mod:`feed_streams`), and random chunkings, for the follower fuzz.

* :func:`ignored_edits`: edits a follower must ignore (a duplicate of an applied entry, an event of an unknown type,
  comments, ``retry`` and unknown fields): its state is the whole stream's;
* :func:`fatal_edits`: edits that end the connection at a known event (a gap, two entries swapped, an entry before
  ``hello`` or before the snapshot it needs, a second ``hello``, bad JSON, JSON nested past the recursion limit,
  bad UTF-8, an ``id`` or event type that does not match the data, an event or a line over the size limit): its
  state is that of a prefix before that event (a parser error loses the events of the same chunk before it, so
  possibly a shorter prefix);
* :func:`chunkings`: a byte string cut anywhere, empty chunks included, often right after a CR.
"""

from __future__ import annotations

from hypothesis import strategies as st

from tests.fuzz.feed_streams import Event

__all__ = ["DEEP", "LIMIT", "VARIANTS", "chunkings", "fatal_edits", "ignored_edits"]

MARK = b"CANARY-fe-4a10"
LIMIT = 64 * 1024  # the follower's max_event_bytes here (the default is 64 MiB)
DEEP = 50_000  # JSON nesting beyond the recursion limit of json.loads on 3.11 to 3.13
VARIANTS = {  # rewritings of a whole valid stream that §9.2.6 reads the same way
    "lf": lambda b: b,
    "crlf": lambda b: b.replace(b"\n", b"\r\n"),
    "cr": lambda b: b.replace(b"\n", b"\r"),
    "bom": lambda b: b"\xef\xbb\xbf" + b,
    "no-space": lambda b: b.replace(b"data: ", b"data:").replace(b"id: ", b"id:"),
}


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at random places, empty chunks included, often right after a CR or inside a BOM."""
    special = [*[i + 1 for i, byte in enumerate(data) if byte == 0x0D][:50], 1, 2]
    cuts = sorted(draw(st.lists(st.integers(0, len(data)) | st.sampled_from(special), max_size=12)))
    cuts = [min(cut, len(data)) for cut in cuts]
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _entry_indexes(events: list[Event]) -> list[int]:
    return [i for i, event in enumerate(events) if event.kind == "entry"]


@st.composite
def ignored_edits(draw: st.DrawFn, events: list[Event]) -> tuple[list[bytes], str]:
    """An edit a follower must ignore: the state is the full stream's."""
    raws = [event.raw for event in events]
    kind = draw(st.sampled_from(["duplicate", "unknown-event", "comment", "retry", "unknown-field"]))
    where = draw(st.integers(1, len(raws)))  # after hello: anything but a comment is refused before it
    entries = _entry_indexes(events)
    if kind == "duplicate" and entries:
        j = draw(st.sampled_from(entries))
        raws.insert(draw(st.integers(j + 1, len(raws))), events[j].raw)
    elif kind == "unknown-event":
        raws.insert(where, draw(st.sampled_from([b"event: future.thing\ndata: {}\n\n", b"data: x\n\n"])))
    elif kind == "comment":
        raws.insert(draw(st.integers(0, len(raws))), b":" + MARK + b"\n\n")
    else:
        line = b"retry: 10\n" if kind == "retry" else b"x-field: " + MARK + b"\n"
        raws[where - 1] = line + raws[where - 1]
    return raws, kind


def _damaged(events: list[Event], cut: int) -> dict[str, bytes]:
    """Replacements for event ``cut`` (an entry, or past the end) that end the connection there."""
    seq = events[cut].seq if cut < len(events) else 1
    entry = events[cut].raw if cut < len(events) else b"id: 1\nevent: token.revoked\ndata: {}\n\n"
    kind = entry.split(b"event: ", 1)[1].split(b"\n", 1)[0]
    other = b"key.revoked" if kind != b"key.revoked" else b"token.revoked"
    return {
        "second-hello": events[0].raw,
        "huge": b"id: %d\nevent: token.revoked\ndata: %s\n\n" % (seq, b"x" * LIMIT),
        "overlong-comment": b":" + b"c" * LIMIT + b"\n\n",
        "bad-utf8": b"event: token.revoked\ndata: \xff\xfe" + MARK + b"\n\n",
        "deep-json": b"id: %d\nevent: token.revoked\ndata: %s\n\n" % (seq, b"[" * DEEP),
        "bad-json": b"id: %d\nevent: token.revoked\ndata: {not json\n\n" % seq,
        "id": entry.replace(b"id: %d\n" % seq, b"id: 9%d\n" % seq),
        "type": entry.replace(b"event: " + kind, b"event: " + other),
    }


@st.composite
def fatal_edits(draw: st.DrawFn, events: list[Event]) -> tuple[list[bytes], str, int]:
    """An edit that ends the connection at event ``cut``: the state is that of a prefix before it."""
    raws = [event.raw for event in events]
    entries = _entry_indexes(events)
    cut = draw(st.sampled_from(entries)) if entries else len(raws)
    bad = _damaged(events, cut)
    moves = ["gap", "swap", "before-snapshot"] if entries else []
    kind = draw(st.sampled_from([*sorted(bad), "before-hello", *moves]))
    if kind == "before-hello":
        return [events[-1].raw if entries else b"event: future\ndata: {}\n\n", *raws], kind, 0
    if kind == "gap":
        del raws[cut]  # the last one: the stream just ends sooner
    elif kind == "swap":
        raws[cut : cut + 2] = raws[cut : cut + 2][::-1] if cut + 1 < len(raws) else [bad["bad-json"]]
    elif kind == "before-snapshot":
        raws.insert(1, raws.pop(cut))
        cut = 1
    else:
        raws[cut : cut + 1] = [bad[kind]]  # past the end: appended
    return raws, kind, cut
