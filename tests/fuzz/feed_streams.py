"""Revocation feed streams for fuzzing the follower: valid ones as the server writes them, hostile edits of them, a
reference of the index state each prefix gives, and one connection of a real
:class:`~broker.verify.feed.RevocationFeedFollower` over a scripted stream (its :data:`FeedOpener` seam).

A valid stream (:func:`valid_streams`): ``hello``, a ``snapshot`` at some ``seq``, then the later entries, each
written by :mod:`broker.events.feed`'s own writers, as a list of :class:`Event` (its bytes, and what a follower
without state must do with it). :func:`prefix_states` gives the index's state after each event, computed with
:class:`~broker.events.revocations.RevocationIndex` directly (not through the parser or the follower), as a
:func:`fingerprint` of public answers: ``seq``, size, quarantines in force, and the refusal of every ``jti``,
``kid`` and subject the stream names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from broker._backoff import Backoff
from broker.events.feed import entry_event, hello_event, snapshot_event
from broker.events.revocations import (
    KeyRevoked,
    LogEntry,
    RevocationEvent,
    RevocationIndex,
    SubjectPattern,
    SubjectQuarantined,
    SubjectReleased,
    TokenRevoked,
)
from broker.verify.feed import RevocationFeedFollower
from broker.verify.feed_transport import FeedResponse

__all__ = ["Event", "fingerprint", "follow_once", "prefix_states", "valid_streams"]

FEED_ID = "f1"
NOW = 1_900_000_000  # the wall clock the follower and the reference use (2030), whole seconds
ISSUER = "https://broker.test"
PATTERNS = ("spiffe://example.org/ns/a", "spiffe://example.org/ns/*", "spiffe://example.org/ns/a/*")
SUBJECTS = ("spiffe://example.org/ns/a", "spiffe://example.org/ns/a/b", "spiffe://example.org/ns/c")
JTIS = tuple(f"jti-{i}" for i in range(6))
KIDS = ("k1", "k2")


@dataclass(frozen=True)
class Event:
    """One event of a stream: its bytes and what it is (``hello``, ``snapshot``, ``entry``)."""

    raw: bytes
    kind: str
    entries: tuple[LogEntry, ...] = ()  # the snapshot's entries, or the one entry
    seq: int = 0  # the snapshot's head, or the entry's seq


def _at(offset: int) -> datetime:
    return datetime.fromtimestamp(NOW + offset, UTC)


@st.composite
def revocation_events(draw: st.DrawFn) -> RevocationEvent:
    kind = draw(st.sampled_from(["token", "token", "key", "quarantine", "release"]))
    exp = _at(draw(st.integers(-100, 7200)))
    if kind == "token":
        return TokenRevoked(draw(st.sampled_from(JTIS)), exp)
    if kind == "key":
        return KeyRevoked(draw(st.sampled_from(KIDS)), exp)
    pattern = SubjectPattern.parse(draw(st.sampled_from(PATTERNS)))
    at = _at(draw(st.integers(-3600, 0)))
    if kind == "release":
        return SubjectReleased(pattern, at)
    until = draw(st.none() | st.integers(-60, 7200).map(_at))
    return SubjectQuarantined(pattern, at, until, _at(draw(st.integers(-60, 7200))))


@st.composite
def valid_streams(draw: st.DrawFn, max_entries: int = 12) -> list[Event]:
    """hello, a snapshot at seq ``k`` (its entries those up to ``k``), then entries ``k+1`` to ``n``."""
    log = [
        LogEntry(seq, event) for seq, event in enumerate(draw(st.lists(revocation_events(), max_size=max_entries)), 1)
    ]
    k = draw(st.integers(0, len(log)))
    events = [Event(hello_event(FEED_ID, len(log)), "hello")]
    events.append(Event(snapshot_event(FEED_ID, k, log[:k]), "snapshot", tuple(log[:k]), k))
    events += [Event(entry_event(entry), "entry", (entry,), entry.seq) for entry in log[k:]]
    return events


def fingerprint(index: RevocationIndex) -> tuple[Any, ...]:
    """The index's public answers at :data:`NOW` over everything a generated stream names."""
    now = _at(0)
    answers = [index.refusal(jti=j, kid=None, subject="spiffe://example.org/z", issued_at=now, now=now) for j in JTIS]
    answers += [index.refusal(jti=None, kid=k, subject="spiffe://example.org/z", issued_at=now, now=now) for k in KIDS]
    for subject in SUBJECTS:
        for issued in (_at(-7200), _at(1)):
            answers.append(index.refusal(jti=None, kid=None, subject=subject, issued_at=issued, now=now))
    quarantined = tuple(q.pattern.text for q in index.quarantines(now))
    return index.seq, len(index), quarantined, tuple(answers)


def prefix_states(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    """The fingerprint after each prefix of ``events`` (index 0: nothing applied), by the feed's rules."""
    index = RevocationIndex()
    states = [fingerprint(index)]
    for event in events:
        if event.kind == "snapshot":
            index.reset(event.entries, event.seq)
        elif event.kind == "entry" and event.seq == index.seq + 1:
            index.apply(event.entries[0])
        states.append(fingerprint(index))
    return states


@dataclass
class _Response:
    chunks_: list[bytes]
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=lambda: {"Content-Type": "text/event-stream"})

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks_:
            yield chunk

    async def read_body(self, limit: int) -> bytes:
        return b"".join(self.chunks_)[:limit]


class _Unexpected(logging.Handler):
    """ERROR records of the follower: what it logs when something it did not foresee was raised."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def _metadata(url: str) -> object:
    return {"issuer": ISSUER, "spiffe_broker_revocation_feed_endpoint": f"{ISSUER}/v1/revocations"}


async def _follow(chunks: list[bytes], max_event_bytes: int) -> tuple[RevocationFeedFollower, int]:
    second = asyncio.Event()
    opened = 0

    @contextlib.asynccontextmanager
    async def opener(url: str, headers: Mapping[str, str]) -> AsyncIterator[FeedResponse]:
        nonlocal opened
        opened += 1
        if opened > 1:  # the stream was read to its end or refused: the follower reconnects
            second.set()
            await asyncio.sleep(3600)
        yield _Response(chunks)

    follower = RevocationFeedFollower(issuer=ISSUER, fetch_json=_metadata, open_feed=opener,
                                      backoff=Backoff(initial=0, maximum=0), max_event_bytes=max_event_bytes,
                                      wall_clock=lambda: float(NOW))  # fmt: skip
    follower.start()
    async with asyncio.timeout(10):
        await second.wait()
    await follower.aclose()
    return follower, opened


def follow_once(chunks: list[bytes], *, max_event_bytes: int = 64 * 1024) -> tuple[tuple[Any, ...], list[str]]:
    """A follower without state reads ``chunks`` as one connection: its index's fingerprint, and the ERROR lines
    it logged (an exception it did not foresee is logged at ERROR as ``unexpected``)."""
    watch = _Unexpected()
    logger = logging.getLogger("broker.verify")
    logger.addHandler(watch)
    try:
        follower, _ = asyncio.run(_follow(chunks, max_event_bytes))
    finally:
        logger.removeHandler(watch)
    return fingerprint(follower.index), watch.lines
