"""Quarantine add, release and list over the memory store's revocation log, and the key revocation it publishes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from broker.errors import OAuthError
from broker.events.revocations import (
    KeyRevoked,
    RevocationIndex,
    SubjectPattern,
    SubjectQuarantined,
    SubjectReleased,
    TokenRevoked,
)
from broker.store import latest_version
from broker.store.memory import MemoryStore
from broker.testing import ManualClock
from broker.tokens import quarantine as quarantine_module
from broker.tokens.quarantine import (
    MAX_REASON,
    MAX_UNTIL,
    InvalidPatternError,
    InvalidReasonError,
    InvalidUntilError,
    NotQuarantinedError,
    WholeTrustDomainError,
    check_reason,
    parse_pattern,
    parse_until,
)
from tests.unit.tokens.quarantine_helpers import (
    ADMIN,
    BATCH,
    OTHER,
    START,
    WEB,
    WINDOW,
    LiveLedger,
    at,
    entry,
    service,
)

SHOP = SubjectPattern.parse("spiffe://example.org/ns/shop/*")
EXACT = SubjectPattern.parse(WEB)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(latest_version())


@pytest.fixture
async def ledger(clock: ManualClock) -> LiveLedger:
    """Live tokens: two of WEB, one of BATCH, one of OTHER; and an expired one of WEB."""
    ledger, now = LiveLedger(), at(clock)
    await ledger.record([
        entry("jti-web-1", WEB, now - timedelta(seconds=60)),
        entry("jti-web-2", WEB, now - timedelta(seconds=10)),
        entry("jti-batch", BATCH, now - timedelta(seconds=30)),
        entry("jti-other", OTHER, now - timedelta(seconds=30)),
        entry("jti-web-old", WEB, now - timedelta(seconds=900)),
    ])  # fmt: skip
    return ledger


async def _log(store: MemoryStore) -> list[object]:
    return [e.event for e in (await store.revocations.read(0)).entries]


async def _audit(store: MemoryStore) -> list[tuple[str, dict[str, object]]]:
    return [(r.event, json.loads(r.body)) for r in await store.audit.read(1, 100)]


async def _index(store: MemoryStore, now: datetime) -> RevocationIndex:
    page = await store.revocations.snapshot(now)
    index = RevocationIndex()
    index.reset(page.entries, page.head)
    return index


# -- add ---------------------------------------------------------------------------------------------------------


async def test_add_appends_the_quarantine_then_each_live_token_of_matching_subjects_in_one_append(
    store: MemoryStore, ledger: LiveLedger, clock: ManualClock
) -> None:
    added = await service(store, ledger, clock).add(SHOP, "incident 42", None, ADMIN)
    now = at(clock)
    quarantine = SubjectQuarantined(SHOP, at=now, until=None, cutoff_until=now + WINDOW, reason="incident 42")
    assert await _log(store) == [
        quarantine,
        TokenRevoked("jti-batch", now + timedelta(seconds=270)),
        TokenRevoked("jti-web-1", now + timedelta(seconds=240)),
        TokenRevoked("jti-web-2", now + timedelta(seconds=290)),
    ]
    assert (added.quarantine, added.seq, added.live_tokens, added.truncated) == (quarantine, 1, 3, False)
    assert await _audit(store) == [
        ("subject.quarantined", {"pattern": SHOP.text, "reason": "incident 42", "until": None, "live_tokens": 3,
                                 "actor": ADMIN}),
    ]  # fmt: skip


async def test_an_exact_id_revokes_only_that_ids_tokens_and_until_is_kept(
    store: MemoryStore, ledger: LiveLedger, clock: ManualClock
) -> None:
    until = at(clock, 1800)
    added = await service(store, ledger, clock).add(EXACT, "leaked", until, None)
    assert [e.jti for e in await _log(store) if isinstance(e, TokenRevoked)] == ["jti-web-1", "jti-web-2"]
    assert added.quarantine.until == until
    assert (await _audit(store))[0][1]["until"] == int(until.timestamp())


async def test_the_ledger_rows_queued_here_are_written_before_the_live_tokens_are_read(
    store: MemoryStore, ledger: LiveLedger, clock: ManualClock
) -> None:
    async def flush() -> None:  # the replica's batch writer: one row still queued
        await ledger.record([entry("jti-queued", WEB, at(clock))])

    await service(store, ledger, clock, flush_ledger=flush).add(EXACT, "incident", None, ADMIN)
    assert "jti-queued" in [e.jti for e in await _log(store) if isinstance(e, TokenRevoked)]


async def test_beyond_the_entry_limit_the_cutoff_refuses_the_rest_and_the_result_says_truncated(
    store: MemoryStore, ledger: LiveLedger, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quarantine_module, "MAX_REVOKED_TOKENS", 2)
    added = await service(store, ledger, clock).add(SHOP, "incident", None, ADMIN)
    assert ledger.asked == [(SHOP.text, 3)]
    assert (added.live_tokens, added.truncated) == (2, True)
    index = await _index(store, at(clock, 1))
    refusal = index.refusal(jti="jti-web-2", kid="k-1", subject=WEB, issued_at=at(clock, -10), now=at(clock, 1))
    assert refusal == "quarantined"  # not listed by jti, refused all the same


async def test_a_ledger_that_does_not_answer_still_quarantines_and_the_count_is_unknown(
    store: MemoryStore, ledger: LiveLedger, clock: ManualClock
) -> None:
    ledger.failing = True
    added = await service(store, ledger, clock).add(SHOP, "incident", None, ADMIN)
    assert [type(e) for e in await _log(store)] == [SubjectQuarantined]
    assert (added.live_tokens, added.ledger_error) == (None, "state store unavailable; retry later")
    assert (await _audit(store))[0][1]["live_tokens"] is None
    assert "locked" not in str(added)  # the store's own words stay in the log


async def test_quarantining_again_replaces_the_reason_and_until(
    store: MemoryStore, ledger: LiveLedger, clock: ManualClock
) -> None:
    quarantines = service(store, ledger, clock)
    await quarantines.add(SHOP, "first", at(clock, 600), ADMIN)
    clock.advance(5)
    await quarantines.add(SHOP, "second", None, ADMIN)
    [found] = await quarantines.in_force()
    assert (found.reason, found.until, found.at) == ("second", None, at(clock))


async def test_quarantining_again_with_an_earlier_end_reports_the_longer_quarantine_that_stays_in_force(
    store: MemoryStore, ledger: LiveLedger, clock: ManualClock
) -> None:
    quarantines = service(store, ledger, clock)
    first_until = at(clock, 7200)
    await quarantines.add(SHOP, "first", first_until, ADMIN)
    clock.advance(5)
    added = await quarantines.add(SHOP, "second", at(clock, 1800), ADMIN)
    [found] = await quarantines.in_force()
    assert (added.quarantine.until, added.quarantine.reason) == (first_until, "second")
    assert (found.until, found.reason) == (first_until, "second")
    assert (await _audit(store))[-1][1]["until"] == int(first_until.timestamp())


@pytest.mark.parametrize(
    "reason",
    ["", "   ", "line\nbreak", "tab\there", "bell\x07", "x" * (MAX_REASON + 1), "nel\x85", "ls\u2028"],
    ids=["empty", "spaces", "newline", "tab", "bell", "too long", "C1 control", "line separator"],
)
async def test_a_bad_reason_is_refused_and_changes_nothing(
    store: MemoryStore, ledger: LiveLedger, clock: ManualClock, reason: str
) -> None:
    with pytest.raises(InvalidReasonError, match="reason must be 1 to 200 printable characters"):
        await service(store, ledger, clock).add(SHOP, reason, None, ADMIN)
    assert await _log(store) == [] and await _audit(store) == [] and ledger.asked == []


@pytest.mark.parametrize("offset", [0.0, -1.0, -86400.0], ids=["now", "a second ago", "yesterday"])
async def test_an_until_not_in_the_future_is_refused_and_changes_nothing(
    store: MemoryStore, ledger: LiveLedger, clock: ManualClock, offset: float
) -> None:
    with pytest.raises(InvalidUntilError, match="is not in the future"):
        await service(store, ledger, clock).add(SHOP, "incident", at(clock, offset), ADMIN)
    assert await _log(store) == [] and await _audit(store) == []


# -- release and list --------------------------------------------------------------------------------------------


async def test_release_ends_the_quarantine_but_the_tokens_it_revoked_stay_revoked(
    store: MemoryStore, ledger: LiveLedger, clock: ManualClock
) -> None:
    quarantines = service(store, ledger, clock)
    added = await quarantines.add(SHOP, "incident", None, ADMIN)
    clock.advance(30)
    released = await quarantines.release(SHOP, ADMIN)
    assert (released.quarantine, released.at, released.seq) == (added.quarantine, at(clock), 5)
    assert (await _log(store))[-1] == SubjectReleased(SHOP, at(clock))
    assert (await _audit(store))[-1] == ("subject.released", {"pattern": SHOP.text, "actor": ADMIN})
    assert await quarantines.in_force() == []
    now = at(clock, 1)
    index = await _index(store, now)
    before = added.quarantine.at - timedelta(seconds=1)
    assert index.refusal(jti="jti-web-1", kid="k-1", subject=WEB, issued_at=before, now=now) == "revoked"
    assert index.refusal(jti="unrecorded", kid="k-1", subject=BATCH, issued_at=before, now=now) == "quarantined"
    assert index.refusal(jti="new", kid="k-1", subject=WEB, issued_at=now, now=now) is None


@pytest.mark.parametrize(
    "release",
    [WEB, "spiffe://example.org/ns/*", "spiffe://example.org/ns/shop"],
    ids=["a matching ID, not the pattern", "a wider prefix", "the prefix's own ID"],
)
async def test_release_of_a_pattern_not_quarantined_is_not_quarantined_and_changes_nothing(
    store: MemoryStore, ledger: LiveLedger, clock: ManualClock, release: str
) -> None:
    quarantines = service(store, ledger, clock)
    await quarantines.add(SHOP, "incident", None, ADMIN)
    log, journal = await _log(store), await _audit(store)
    with pytest.raises(NotQuarantinedError, match="'spiffe-broker quarantine list' shows those in force") as caught:
        await quarantines.release(SubjectPattern.parse(release), ADMIN)
    assert (caught.value.error, caught.value.status) == ("not_quarantined", 404)
    assert await _log(store) == log and await _audit(store) == journal


async def test_release_after_until_has_passed_or_twice_is_not_quarantined(
    store: MemoryStore, ledger: LiveLedger, clock: ManualClock
) -> None:
    quarantines = service(store, ledger, clock)
    await quarantines.add(SHOP, "incident", at(clock, 60), ADMIN)
    await quarantines.add(EXACT, "incident", None, ADMIN)
    await quarantines.release(EXACT, ADMIN)
    clock.advance(61)
    for pattern in (SHOP, EXACT):
        with pytest.raises(NotQuarantinedError):
            await quarantines.release(pattern, ADMIN)


async def test_list_shows_the_quarantines_in_force_with_reason_since_and_until(
    store: MemoryStore, ledger: LiveLedger, clock: ManualClock
) -> None:
    quarantines = service(store, ledger, clock)
    await quarantines.add(SHOP, "shop incident", at(clock, 60), ADMIN)
    await quarantines.add(SubjectPattern.parse(OTHER), "billing incident", None, ADMIN)
    listed = await quarantines.in_force()
    assert [(q.pattern.text, q.reason, q.at, q.until) for q in listed] == [
        (OTHER, "billing incident", at(clock), None),
        (SHOP.text, "shop incident", at(clock), at(clock, 60)),
    ]
    assert [q.pattern for q in await quarantines.in_force(at(clock, 61))] == [SubjectPattern.parse(OTHER)]


# -- key revocation on the feed ----------------------------------------------------------------------------------


async def test_a_key_revocation_is_kept_until_the_window_and_grace_when_the_ledger_knows_nothing_later(
    store: MemoryStore, ledger: LiveLedger, clock: ManualClock
) -> None:
    event = await service(store, ledger, clock).publish_key_revocation("k-1", grace=timedelta(seconds=60))
    assert event == KeyRevoked("k-1", at(clock) + WINDOW + timedelta(seconds=60))
    assert await _log(store) == [event]


async def test_a_key_revocation_is_kept_until_the_latest_exp_the_ledger_knows_when_that_is_later(
    store: MemoryStore, ledger: LiveLedger, clock: ManualClock
) -> None:
    await ledger.record([entry("jti-long", WEB, at(clock), lifetime=86400, kid="k-long")])
    event = await service(store, ledger, clock).publish_key_revocation("k-long")
    assert event == KeyRevoked("k-long", at(clock, 86400))


# -- input parsing -----------------------------------------------------------------------------------------------

BAD_PATTERNS = [
    ("empty", "", InvalidPatternError),
    ("not a URI", "web", InvalidPatternError),
    ("another scheme", "https://example.org/ns/shop", InvalidPatternError),
    ("uppercase scheme", "SPIFFE://example.org/ns/shop", InvalidPatternError),
    ("uppercase trust domain", "spiffe://Example.org/ns/shop", InvalidPatternError),
    ("trailing slash", "spiffe://example.org/ns/shop/", InvalidPatternError),
    ("glob in a segment", "spiffe://example.org/ns/sh*", InvalidPatternError),
    ("glob in the middle", "spiffe://example.org/ns/*/web", InvalidPatternError),
    ("double glob", "spiffe://example.org/ns/**", InvalidPatternError),
    ("glob for the trust domain", "spiffe://*", InvalidPatternError),
    ("no trust domain", "spiffe:///*", InvalidPatternError),
    ("query", "spiffe://example.org/ns/shop?x=1", InvalidPatternError),
    ("trailing newline", "spiffe://example.org/ns/shop\n", InvalidPatternError),
    ("a trust domain's own ID", "spiffe://example.org", InvalidPatternError),
    ("whole trust domain", "spiffe://example.org/*", WholeTrustDomainError),
]


@pytest.mark.parametrize(("value", "error"), [b[1:] for b in BAD_PATTERNS], ids=[b[0] for b in BAD_PATTERNS])
def test_a_pattern_that_is_not_a_spiffe_id_or_prefix_is_refused_with_its_own_error(
    value: str, error: type[OAuthError]
) -> None:
    with pytest.raises(error) as caught:
        parse_pattern(value)
    assert type(caught.value) is error and caught.value.status == 400
    assert value.strip() not in caught.value.description or not value  # never quoted back


def test_the_whole_trust_domain_needs_the_flag_and_says_so() -> None:
    with pytest.raises(WholeTrustDomainError, match="pass all_of_trust_domain"):
        parse_pattern("spiffe://example.org/*")
    assert parse_pattern("spiffe://example.org/*", all_of_trust_domain=True).text == "spiffe://example.org/*"


@pytest.mark.parametrize("value", [WEB, "spiffe://example.org/ns/shop/*", "spiffe://td.internal/a"])
def test_a_valid_pattern_is_kept_exactly(value: str) -> None:
    assert parse_pattern(value).text == value


NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "until"),
    [
        ("90s", NOW + timedelta(seconds=90)),
        ("30m", NOW + timedelta(minutes=30)),
        ("2h", NOW + timedelta(hours=2)),
        ("7d", NOW + timedelta(days=7)),
        ("2030-01-02T04:00:00Z", datetime(2030, 1, 2, 4, tzinfo=UTC)),
        ("2030-01-02t04:00:00z", datetime(2030, 1, 2, 4, tzinfo=UTC)),
        ("2030-01-02T05:00:00.5+01:00", datetime(2030, 1, 2, 4, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_until_is_an_rfc_3339_time_or_a_duration_from_now(text: str, until: datetime) -> None:
    assert parse_until(text, NOW) == until


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2030-01-02T04:00:00", "RFC 3339 time with its offset"),
        ("2030-01-02", "RFC 3339 time with its offset"),
        ("tomorrow", "RFC 3339 time with its offset"),
        ("0m", "RFC 3339 time with its offset"),
        ("-5m", "RFC 3339 time with its offset"),
        ("5 m", "RFC 3339 time with its offset"),
        ("2030-02-30T00:00:00Z", "not a valid RFC 3339 date-time"),
        ("2030-01-02T03:04:05Z", "is not in the future"),
        ("2020-01-01T00:00:00Z", "is not in the future"),
        (f"{MAX_UNTIL.days + 1}d", "leave it out for a quarantine until released"),
        ("99999999d", "leave it out for a quarantine until released"),
    ],
)
def test_a_bad_until_is_refused_naming_the_forms(text: str, says: str) -> None:
    with pytest.raises(InvalidUntilError, match=says):
        parse_until(text, NOW)


def test_a_reason_keeps_unicode_text() -> None:
    reason = "Verdacht auf Kompromittierung, Störung #42 (ü, é, 日本)"
    assert check_reason(reason) == reason
