"""The revocation feed's wire form: entry_to_wire / entry_from_wire round trip, the reason stays home, and
entry_from_wire accepts exactly what entry_to_wire writes (anything else is a ValueError, never another error)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.events.revocations import (
    KeyRevoked,
    LogEntry,
    RevocationEvent,
    SubjectPattern,
    SubjectQuarantined,
    SubjectReleased,
    TokenRevoked,
    entry_from_wire,
    entry_to_wire,
)


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def pattern(text: str) -> SubjectPattern:
    return SubjectPattern.parse(text, all_of_trust_domain=True)


PATTERNS = ["spiffe://td/a", "spiffe://td/a/*", "spiffe://td/*", "spiffe://*", "td/*", "spiffe://td/a/"]

INSTANTS = st.integers(0, 2**33).map(at)
VISIBLE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=256)
SEGMENTS = st.text("abcXYZ019._-", min_size=1, max_size=6).filter(lambda s: s not in (".", ".."))
WIRE_PATTERNS = st.builds(
    lambda td, path, star: pattern(f"spiffe://{td}" + "".join(f"/{s}" for s in path) + ("/*" if star else "")),
    st.from_regex(r"[a-z0-9._-]{1,12}", fullmatch=True),
    st.lists(SEGMENTS, max_size=4),
    st.booleans(),
)
WIRE_EVENTS: st.SearchStrategy[RevocationEvent] = st.one_of(
    st.builds(TokenRevoked, VISIBLE, INSTANTS),
    st.builds(KeyRevoked, VISIBLE, INSTANTS),
    st.builds(SubjectQuarantined, WIRE_PATTERNS, INSTANTS, st.none() | INSTANTS, INSTANTS),
    st.builds(SubjectReleased, WIRE_PATTERNS, INSTANTS),
)


@settings(max_examples=300, deadline=None, database=None)
@given(st.integers(1, 2**63), WIRE_EVENTS)
def test_an_entry_survives_the_wire_as_json(seq: int, event: RevocationEvent) -> None:
    entry = LogEntry(seq, event)
    assert entry_from_wire(json.loads(json.dumps(entry_to_wire(entry)))) == entry


def test_the_quarantine_reason_never_goes_on_the_wire() -> None:
    event = SubjectQuarantined(pattern("spiffe://td/a/*"), at(0), at(10), at(20), reason="key stolen by mallory")
    wire = entry_to_wire(LogEntry(3, event))
    assert set(wire) == {"seq", "type", "pattern", "at", "until", "cutoff_until"}
    assert "mallory" not in json.dumps(wire)
    assert entry_from_wire(wire) == LogEntry(3, replace(event, reason=""))


VALID: dict[str, dict[str, Any]] = {
    "token": {"seq": 1, "type": "token.revoked", "jti": "j", "exp": 100},
    "key": {"seq": 2, "type": "key.revoked", "kid": "k", "exp": 100},
    "quarantine": {
        "seq": 3, "type": "subject.quarantined", "pattern": "spiffe://td/*", "at": 1, "until": None, "cutoff_until": 9
    },
    "release": {"seq": 4, "type": "subject.released", "pattern": "spiffe://td/a", "at": 0},
}  # fmt: skip
MISSING = object()
BAD_WIRE = {
    "unknown-type": ("token", "type", "token.unrevoked"),
    "type-in-capitals": ("token", "type", "TOKEN.REVOKED"),
    "type-not-a-string": ("token", "type", 1),
    "extra-reason": ("quarantine", "reason", "why"),
    "extra-kid-on-token": ("token", "kid", "k"),
    "seq-bool": ("token", "seq", True),
    "seq-float": ("token", "seq", 1.0),
    "seq-string": ("token", "seq", "1"),
    "seq-zero": ("token", "seq", 0),
    "seq-negative": ("token", "seq", -1),
    "seq-null": ("token", "seq", None),
    "exp-bool": ("token", "exp", True),
    "exp-float": ("token", "exp", 100.0),
    "exp-string": ("key", "exp", "100"),
    "exp-negative": ("key", "exp", -1),
    "exp-null": ("token", "exp", None),
    "exp-past-year-9999": ("token", "exp", 253402300800),
    "exp-past-time-t": ("token", "exp", 10**20),
    "at-bool": ("release", "at", False),
    "at-negative": ("quarantine", "at", -1),
    "until-float": ("quarantine", "until", 1.5),
    "until-string": ("quarantine", "until", "5"),
    "until-negative": ("quarantine", "until", -5),
    "until-huge": ("quarantine", "until", 2**64),
    "cutoff-null": ("quarantine", "cutoff_until", None),
    "pattern-trailing-slash": ("release", "pattern", "spiffe://td/a/"),
    "pattern-no-scheme": ("quarantine", "pattern", "td/*"),
    "pattern-star-in-segment": ("release", "pattern", "spiffe://td/a*"),
    "pattern-not-a-string": ("release", "pattern", 5),
    "pattern-list": ("quarantine", "pattern", ["spiffe://td/a"]),
    "jti-number": ("token", "jti", 5),
    "jti-null": ("token", "jti", None),
    "jti-empty": ("token", "jti", ""),
    "jti-over-long": ("token", "jti", "a" * 257),
    "jti-space": ("token", "jti", "a b"),
    "jti-non-ascii": ("token", "jti", "\u00e9"),
    "kid-number": ("key", "kid", 7),
    "kid-over-long": ("key", "kid", "k" * 257),
    **{f"{name}-without-{key}": (name, key, MISSING) for name, obj in VALID.items() for key in obj},
}


@pytest.mark.parametrize("obj", VALID.values(), ids=VALID.keys())
def test_what_entry_to_wire_writes_parses_back_to_the_same_object(obj: dict[str, Any]) -> None:
    assert entry_to_wire(entry_from_wire(obj)) == obj


@pytest.mark.parametrize(("name", "key", "value"), BAD_WIRE.values(), ids=BAD_WIRE.keys())
def test_entry_from_wire_refuses_anything_but_an_exact_entry_with_a_value_error(
    name: str, key: str, value: Any
) -> None:
    obj = {k: v for k, v in VALID[name].items() if k != key}
    if value is not MISSING:
        obj[key] = value
    with pytest.raises(ValueError):  # the message names the rule broken
        entry_from_wire(obj)


def parsed_or_refused(obj: Any) -> None:
    """A LogEntry (and then exactly what entry_to_wire writes for it) or a ValueError; never another exception."""
    try:
        entry = entry_from_wire(obj)
    except ValueError:
        return
    assert entry_to_wire(entry) == obj


SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
JSON = st.recursive(
    SCALARS | st.sampled_from(PATTERNS),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
KEYS = st.sampled_from(sorted({key for obj in VALID.values() for key in obj})) | st.text(max_size=6)
TYPES = st.sampled_from([obj["type"] for obj in VALID.values()])


@settings(max_examples=500, deadline=None, database=None)
@given(st.dictionaries(KEYS, JSON | TYPES, max_size=7))
def test_an_arbitrary_json_object_is_an_entry_or_a_value_error(obj: dict[str, Any]) -> None:
    parsed_or_refused(obj)


@settings(max_examples=500, deadline=None, database=None)
@given(st.sampled_from(sorted(VALID)), KEYS, JSON | st.just(MISSING))
def test_a_valid_entry_with_one_value_changed_is_an_entry_or_a_value_error(name: str, key: str, value: Any) -> None:
    obj = {k: v for k, v in VALID[name].items() if k != key}
    if value is not MISSING:
        obj[key] = value
    parsed_or_refused(obj)


@settings(max_examples=200, deadline=None, database=None)
@given(JSON)
def test_any_json_document_is_an_entry_or_a_value_error(document: Any) -> None:
    parsed_or_refused(document)


def test_sub_second_times_round_up_on_the_wire_so_a_follower_never_stops_refusing_early() -> None:
    later = datetime.fromtimestamp(1_700_000_000.25, UTC)
    quarantine = SubjectQuarantined(pattern("spiffe://td/a"), later, later, later)
    wire = entry_to_wire(LogEntry(1, quarantine))
    assert (wire["at"], wire["until"], wire["cutoff_until"]) == (1_700_000_001,) * 3
    assert entry_to_wire(LogEntry(2, TokenRevoked("j", later)))["exp"] == 1_700_000_001
