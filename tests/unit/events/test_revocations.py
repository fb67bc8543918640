"""The revocation log model: subject patterns and keys, what the index refuses (issue 10); wire form: _wire."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.events.revocations import (
    KeyRevoked,
    LogEntry,
    RevocationEvent,
    RevocationIndex,
    SubjectPattern,
    SubjectQuarantined,
    SubjectReleased,
    TokenRevoked,
    kept_until,
    subject_keys,
)
from broker.store.memory.changes import MemoryChangeFeed
from broker.store.memory.revocations import MemoryRevocationLog

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def pattern(text: str) -> SubjectPattern:
    return SubjectPattern.parse(text, all_of_trust_domain=True)


def quarantine(text: str, since: int, until: int | None = None, cutoff: int = 100) -> SubjectQuarantined:
    return SubjectQuarantined(pattern(text), at(since), None if until is None else at(until), at(cutoff))


def index_of(*events: RevocationEvent) -> RevocationIndex:
    index = RevocationIndex()
    for seq, event in enumerate(events, 1):
        index.apply(LogEntry(seq, event))
    return index


def refusal(index: RevocationIndex, subject: str, issued: int, now: int, jti: str = "j", kid: str = "k") -> str | None:
    return index.refusal(jti=jti, kid=kid, subject=subject, issued_at=at(issued), now=at(now))


# SubjectPattern.parse


@pytest.mark.parametrize(
    ("value", "is_prefix"),
    [
        ("spiffe://example.org/web", False),
        ("spiffe://example.org/ns/prod/sa/web", False),
        ("spiffe://example.org", False),  # the trust domain's own ID: that ID only
        ("spiffe://example.org/ns/prod/*", True),
        ("spiffe://example.org/a.b-c_D/*", True),
    ],
    ids=["exact", "exact-deep", "trust-domain-id", "prefix", "prefix-all-characters"],
)
def test_parse_keeps_an_exact_id_or_a_prefix_as_written(value: str, is_prefix: bool) -> None:
    parsed = SubjectPattern.parse(value)
    assert (parsed.text, str(parsed), parsed.is_prefix) == (value, value, is_prefix)


def test_whole_trust_domain_is_refused_without_the_flag() -> None:
    with pytest.raises(ValueError, match=r"every SPIFFE ID of trust domain example\.org"):
        SubjectPattern.parse("spiffe://example.org/*")


def test_whole_trust_domain_parses_with_the_flag() -> None:
    parsed = SubjectPattern.parse("spiffe://example.org/*", all_of_trust_domain=True)
    assert (parsed.text, parsed.is_prefix, parsed.key) == ("spiffe://example.org/*", True, "spiffe://example.org/")


BAD_PATTERNS = {
    "scheme-star": "spiffe://*",
    "one-slash-star": "spiffe:/*",
    "no-trust-domain-star": "spiffe:///*",
    "empty-segment-star": "spiffe://td//*",
    "uppercase-trust-domain": "spiffe://TD/a",
    "uppercase-trust-domain-star": "spiffe://Example.org/*",
    "uppercase-scheme": "SPIFFE://td/a",
    "other-scheme": "https://td/a",
    "no-scheme-star": "td/*",
    "no-scheme-domain-star": "example.org/*",
    "bare-slash-star": "/*",
    "bare-star": "*",
    "trailing-slash": "spiffe://td/a/",
    "query": "spiffe://td/a?x=1",
    "fragment": "spiffe://td/a#f",
    "percent-encoding": "spiffe://td/a%2Fb",
    "dot-segment": "spiffe://td/./a",
    "dot-dot-segment-star": "spiffe://td/a/../*",
    "empty": "",
    "star-in-segment": "spiffe://td/a*",
    "star-first-in-segment": "spiffe://td/*a",
    "double-star": "spiffe://td/a/**",
    "star-not-last": "spiffe://td/*/a",
    "two-stars": "spiffe://td/*/*",
    "trailing-newline": "spiffe://td/a/*\n",
    "port": "spiffe://td:443/a",
    "userinfo": "spiffe://user@td/a",
    "space": "spiffe://td/a b",
    "non-ascii": "spiffe://td/\u00e9",
    "lone-surrogate": "spiffe://td/\ud800/*",
    "too-long": "spiffe://td/" + "a" * 2040 + "/*",
}


@pytest.mark.parametrize("value", BAD_PATTERNS.values(), ids=BAD_PATTERNS.keys())
def test_parse_refuses_what_is_not_an_id_or_an_id_prefix_with_a_value_error(value: str) -> None:
    with pytest.raises(ValueError):  # the message names the rule broken
        SubjectPattern.parse(value, all_of_trust_domain=True)


def test_prefix_matches_descendants_only() -> None:
    prefix = SubjectPattern.parse("spiffe://td/a/*")
    assert prefix.matches("spiffe://td/a/b")
    assert prefix.matches("spiffe://td/a/b/c")
    assert not prefix.matches("spiffe://td/a")
    assert not prefix.matches("spiffe://td/ab")
    assert not prefix.matches("spiffe://td2/a/b")
    assert not prefix.matches("spiffe://td.x/a/b")


def test_exact_pattern_matches_that_id_only() -> None:
    exact = SubjectPattern.parse("spiffe://td/a")
    assert exact.matches("spiffe://td/a")
    assert not exact.matches("spiffe://td/a/b")
    assert not exact.matches("spiffe://td/ab")
    assert not SubjectPattern.parse("spiffe://td").matches("spiffe://td/a")


TRUST_DOMAINS = st.sampled_from(["td", "td2", "t.d"])
PATHS = st.lists(st.sampled_from(["a", "b", "ab", "a.b", "A"]), max_size=4).map(tuple)


def spiffe_id(trust_domain: str, path: tuple[str, ...]) -> str:
    return f"spiffe://{trust_domain}" + "".join(f"/{segment}" for segment in path)


def reference_matches(
    pattern_td: str, pattern_path: tuple[str, ...], prefix: bool, td: str, path: tuple[str, ...]
) -> bool:
    if pattern_td != td:
        return False
    if not prefix:
        return path == pattern_path
    return len(path) > len(pattern_path) and path[: len(pattern_path)] == pattern_path


@settings(max_examples=500, deadline=None, database=None)
@given(TRUST_DOMAINS, PATHS, st.booleans(), TRUST_DOMAINS, PATHS)
def test_matches_agrees_with_a_segment_by_segment_reference(
    pattern_td: str, pattern_path: tuple[str, ...], prefix: bool, td: str, path: tuple[str, ...]
) -> None:
    text = spiffe_id(pattern_td, pattern_path) + ("/*" if prefix else "")
    parsed = SubjectPattern.parse(text, all_of_trust_domain=True)
    assert parsed.text == text
    assert parsed.matches(spiffe_id(td, path)) == reference_matches(pattern_td, pattern_path, prefix, td, path)


# subject_keys


@pytest.mark.parametrize(
    ("subject", "keys"),
    [
        ("spiffe://td/a/b", ["spiffe://td/a/b", "spiffe://td/a/", "spiffe://td/"]),
        ("spiffe://td/a", ["spiffe://td/a", "spiffe://td/"]),
        ("spiffe://td", ["spiffe://td"]),
    ],
    ids=["two-segments", "one-segment", "trust-domain-id"],
)
def test_subject_keys_are_the_id_then_each_ancestor_prefix_with_a_slash(subject: str, keys: list[str]) -> None:
    assert list(subject_keys(subject)) == keys


@settings(max_examples=200, deadline=None, database=None)
@given(TRUST_DOMAINS, PATHS)
def test_subject_keys_never_reach_into_the_scheme(td: str, path: tuple[str, ...]) -> None:
    subject = spiffe_id(td, path)
    keys = list(subject_keys(subject))
    assert keys[0] == subject
    assert keys[1:] == [spiffe_id(td, path[:n]) + "/" for n in range(len(path) - 1, -1, -1)]


# kept_until


def test_kept_until_is_the_expiry_the_later_end_or_the_release_time() -> None:
    assert kept_until(TokenRevoked("j", at(5))) == at(5)
    assert kept_until(KeyRevoked("k", at(6))) == at(6)
    assert kept_until(quarantine("spiffe://td/a", 0)) is None
    assert kept_until(quarantine("spiffe://td/a", 0, until=50, cutoff=20)) == at(50)
    assert kept_until(quarantine("spiffe://td/a", 0, until=10, cutoff=20)) == at(20)
    assert kept_until(SubjectReleased(pattern("spiffe://td/a"), at(7))) == at(7)


# RevocationIndex


def test_a_revoked_jti_is_refused_and_other_tokens_are_not() -> None:
    index = index_of(TokenRevoked("j1", at(50)))
    assert refusal(index, "spiffe://td/a", 0, 10, jti="j1") == "revoked"
    assert refusal(index, "spiffe://td/a", 0, 10, jti="j2") is None


def test_a_revoked_key_refuses_every_token_it_signed() -> None:
    index = index_of(KeyRevoked("k1", at(50)))
    assert refusal(index, "spiffe://td/a", 0, 10, kid="k1") == "key_revoked"
    assert refusal(index, "spiffe://td/a", 0, 10, kid="k2") is None


def test_a_revoked_jti_is_reported_before_a_revoked_key_or_a_quarantine() -> None:
    index = index_of(TokenRevoked("j1", at(50)), KeyRevoked("k1", at(50)), quarantine("spiffe://td/a", 0))
    assert refusal(index, "spiffe://td/a", 0, 10, jti="j1", kid="k1") == "revoked"
    assert refusal(index, "spiffe://td/a", 0, 10, kid="k1") == "key_revoked"


def test_an_exact_quarantine_refuses_that_subject_whenever_its_tokens_were_issued() -> None:
    index = index_of(quarantine("spiffe://td/a", 10))
    assert refusal(index, "spiffe://td/a", 5, 20) == "quarantined"
    assert refusal(index, "spiffe://td/a", 15, 20) == "quarantined"
    assert refusal(index, "spiffe://td/a/b", 5, 20) is None
    assert index.quarantine_of("spiffe://td/a", at(20)) == quarantine("spiffe://td/a", 10)


def test_a_prefix_quarantine_refuses_descendants_but_not_the_prefix_or_its_siblings() -> None:
    index = index_of(quarantine("spiffe://td/a/*", 10))
    assert refusal(index, "spiffe://td/a/b", 15, 20) == "quarantined"
    assert refusal(index, "spiffe://td/a/b/c", 15, 20) == "quarantined"
    assert refusal(index, "spiffe://td/a", 5, 20) is None
    assert refusal(index, "spiffe://td/ab", 5, 20) is None
    assert index.quarantine_of("spiffe://td/a", at(20)) is None


def test_a_quarantine_past_its_until_is_inactive_but_its_cutoff_holds() -> None:
    index = index_of(quarantine("spiffe://td/a", 10, until=20, cutoff=40))
    assert index.quarantine_of("spiffe://td/a", at(20)) is None
    assert index.quarantines(at(20)) == []
    assert refusal(index, "spiffe://td/a", 11, 25) is None
    assert refusal(index, "spiffe://td/a", 10, 25) == "quarantined"


def test_release_ends_the_quarantine_but_not_the_cutoff_of_tokens_issued_before_it() -> None:
    index = index_of(quarantine("spiffe://td/a/*", 10, cutoff=40), SubjectReleased(pattern("spiffe://td/a/*"), at(20)))
    assert index.quarantine_of("spiffe://td/a/b", at(25)) is None
    assert refusal(index, "spiffe://td/a/b", 10, 25) == "quarantined"  # issued at `at`
    assert refusal(index, "spiffe://td/a/b", 3, 39) == "quarantined"
    assert refusal(index, "spiffe://td/a/b", 11, 25) is None  # issued after `at`
    assert refusal(index, "spiffe://td/a/b", 3, 40) is None  # cutoff_until has passed


def test_release_of_another_pattern_leaves_the_quarantine() -> None:
    index = index_of(quarantine("spiffe://td/a/*", 10), SubjectReleased(pattern("spiffe://td/a"), at(20)))
    assert refusal(index, "spiffe://td/a/b", 15, 25) == "quarantined"


def test_a_second_quarantine_of_a_pattern_never_shortens_the_first() -> None:
    forever = quarantine("spiffe://td/a", 10)
    shorter = replace(quarantine("spiffe://td/a", 12, until=20, cutoff=30), reason="INC-2")
    index = index_of(forever, shorter)
    assert index.quarantine_of("spiffe://td/a", at(50)) == replace(forever, reason="INC-2")  # the later add's reason
    longer = quarantine("spiffe://td/a", 12, until=60, cutoff=30)
    index = index_of(quarantine("spiffe://td/a", 10, until=20, cutoff=30), longer)
    assert index.quarantine_of("spiffe://td/a", at(50)) == longer


def test_quarantines_lists_the_active_ones_sorted_by_pattern() -> None:
    index = index_of(
        quarantine("spiffe://td/b", 0),
        quarantine("spiffe://td/a/*", 0),
        quarantine("spiffe://td/c", 0, until=5),
        quarantine("spiffe://td/a", 0),
    )
    assert [str(q.pattern) for q in index.quarantines(at(10))] == ["spiffe://td/a", "spiffe://td/a/*", "spiffe://td/b"]


def test_prune_forgets_what_has_ended_and_keeps_what_still_cuts_off() -> None:
    index = index_of(
        TokenRevoked("old", at(10)),
        TokenRevoked("live", at(30)),
        KeyRevoked("old", at(10)),
        KeyRevoked("live", at(30)),
        quarantine("spiffe://td/over", 0, until=10, cutoff=10),
        quarantine("spiffe://td/cut", 0, until=10, cutoff=30),
        quarantine("spiffe://td/held", 0),
    )
    assert len(index) == 10
    index.prune(at(20))
    assert len(index) == 5  # the live token and key, 'held', its cutoff and the cutoff of 'cut'
    assert refusal(index, "spiffe://td/x", 0, 20, jti="old", kid="old") is None
    assert refusal(index, "spiffe://td/x", 0, 20, jti="live") == "revoked"
    assert refusal(index, "spiffe://td/x", 0, 20, kid="live") == "key_revoked"
    assert refusal(index, "spiffe://td/cut", 0, 20) == "quarantined"
    assert refusal(index, "spiffe://td/held", 50, 60) == "quarantined"


def test_reset_replaces_the_whole_state_by_the_snapshot() -> None:
    index = index_of(TokenRevoked("j1", at(50)), quarantine("spiffe://td/a", 0))
    index.reset([LogEntry(4, TokenRevoked("j2", at(50)))], 9)
    assert index.seq == 9
    assert refusal(index, "spiffe://td/a", 0, 10, jti="j1") is None
    assert refusal(index, "spiffe://td/a", 0, 10, jti="j2") == "revoked"


def test_seq_is_the_latest_entry_applied() -> None:
    index = RevocationIndex()
    assert index.seq == 0
    index.apply(LogEntry(1, TokenRevoked("j1", at(50))))
    index.apply(LogEntry(2, KeyRevoked("k1", at(50))))
    assert index.seq == 2


# A follower that starts from the store's snapshot comes to the same answers as one that applied every entry.

JTI_EXP = {"j0": 10, "j1": 40, "j2": 80}  # a jti's token has one exp, so every revocation of it says the same
KID_EXP = {"k0": 20, "k1": 70}
PATTERNS = ["spiffe://td/a", "spiffe://td/a/*", "spiffe://td/a/b", "spiffe://td/*", "spiffe://td2/a"]
SUBJECTS = ["spiffe://td/a", "spiffe://td/a/b", "spiffe://td/b", "spiffe://td2/a"]
TIMES = st.integers(0, 100)


@st.composite
def quarantines(draw: st.DrawFn) -> SubjectQuarantined:
    since = draw(TIMES)
    until = draw(st.none() | st.integers(since, since + 60))
    return quarantine(draw(st.sampled_from(PATTERNS)), since, until, since + draw(st.integers(0, 60)))


EVENTS: st.SearchStrategy[RevocationEvent] = st.one_of(
    st.sampled_from(sorted(JTI_EXP)).map(lambda jti: TokenRevoked(jti, at(JTI_EXP[jti]))),
    st.sampled_from(sorted(KID_EXP)).map(lambda kid: KeyRevoked(kid, at(KID_EXP[kid]))),
    quarantines(),
    st.builds(lambda text, when: SubjectReleased(pattern(text), at(when)), st.sampled_from(PATTERNS), TIMES),
)
QUERIES = st.tuples(
    st.sampled_from([None, *sorted(JTI_EXP)]),
    st.sampled_from([None, *sorted(KID_EXP)]),
    st.sampled_from(SUBJECTS),
    st.integers(0, 160),
    st.integers(0, 60),
)


async def followers(
    events: list[RevocationEvent], split: int, now: datetime, prune: bool
) -> tuple[RevocationIndex, RevocationIndex]:
    """One index fed every entry, one reset from a snapshot taken at ``now`` after ``split`` entries."""
    log = MemoryRevocationLog(MemoryChangeFeed())
    follower, late = RevocationIndex(), RevocationIndex()
    for entry in await log.append(events[:split]):
        follower.apply(entry)
    if prune:
        await log.prune(now)
        follower.prune(now)
    snapshot = await log.snapshot(now)
    late.reset(snapshot.entries, snapshot.head)
    for entry in await log.append(events[split:]):
        follower.apply(entry)
        late.apply(entry)
    return follower, late


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(EVENTS, max_size=12), st.integers(0, 12), TIMES, st.booleans(), st.lists(QUERIES, max_size=20))
def test_a_follower_from_a_snapshot_refuses_exactly_what_a_follower_of_every_entry_refuses(
    events: list[RevocationEvent],
    split: int,
    now: int,
    prune: bool,
    queries: list[tuple[str | None, str | None, str, int, int]],
) -> None:
    follower, late = asyncio.run(followers(events, min(split, len(events)), at(now), prune))
    assert follower.seq == late.seq
    for jti, kid, subject, issued, later in queries:
        when = at(now + later)  # an expired token is refused by its exp: ask only about live ones
        live_jti = jti if jti is not None and at(JTI_EXP[jti]) > when else None
        live_kid = kid if kid is not None and at(KID_EXP[kid]) > when else None
        asked: dict[str, Any] = {
            "jti": live_jti,
            "kid": live_kid,
            "subject": subject,
            "issued_at": at(issued),
            "now": when,
        }
        assert follower.refusal(**asked) == late.refusal(**asked), asked
        assert follower.quarantine_of(subject, when) == late.quarantine_of(subject, when)
        assert follower.quarantines(when) == late.quarantines(when)


def test_an_entry_delivered_again_after_later_ones_changes_nothing() -> None:
    index = RevocationIndex()
    quarantine = LogEntry(1, SubjectQuarantined(SubjectPattern.parse("spiffe://td/a"), T0, None, T0))
    index.apply(quarantine)
    index.apply(LogEntry(2, SubjectReleased(SubjectPattern.parse("spiffe://td/a"), T0)))
    index.apply(quarantine)  # a redelivery must not bring the released quarantine back
    assert index.quarantine_of("spiffe://td/a", T0) is None
    assert index.seq == 2
