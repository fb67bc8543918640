"""Egress reports (uses merged into the store's rows, refusals audited, exfiltration attempts marked) and the
governance report with its strict ``--fail-on`` terms."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from broker.apikeys.grant import EgressRefusal, EgressReport, UseCount
from broker.apikeys.model import Delivery, Status, UseRecord
from broker.apikeys.report import FailOn, build_report
from broker.apikeys.rules import GovernanceRules
from broker.apikeys.usage import UsageRecorder, merge_uses
from broker.errors import TemporarilyUnavailableError
from tests.unit.apikeys.conftest import ADMIN, WEB, World, sample

OTHER = "spiffe://example.org/ns/billing/sa/api"
TARGET = "https://api.stripe.com:443"


def _use(at: datetime, count: int = 1, version: int = 1, name: str = "stripe") -> UseCount:
    return UseCount(name, version, TARGET, count, at)


async def test_uses_are_merged_per_workload_version_and_target_and_written_in_one_call(world: World) -> None:
    await world.add()
    recorder = UsageRecorder(world.store.apikeys, world.trail, flush_interval=60, clock=world.clock)
    now = world.now()
    await recorder.record(WEB, EgressReport(uses=(_use(now - timedelta(seconds=5), 3), _use(now, 2))))
    await recorder.record(WEB, EgressReport(uses=(_use(now - timedelta(seconds=1), 4),)))
    assert await world.store.apikeys.uses() == ()  # queued, not yet written
    await recorder.flush()
    assert await world.store.apikeys.uses() == (UseRecord("stripe", WEB, 1, TARGET, 9, now),)
    await recorder.close()


async def test_uses_of_an_exception_the_reporter_may_not_use_are_dropped(world: World) -> None:
    await world.add()
    recorder = UsageRecorder(world.store.apikeys, world.trail, flush_interval=0, clock=world.clock)
    await recorder.record(OTHER, EgressReport(uses=(_use(world.now(), 5),)))
    await recorder.flush()
    assert await world.store.apikeys.uses() == ()
    await recorder.close()


@pytest.mark.parametrize(
    "target", ["https://evil.example.net:443", "https://api.stripe.com:8443", "http://api.stripe.com:443",
               "https://api.stripe.com:443/v1/", "https://api.stripe.com", "api.stripe.com:443"],
)  # fmt: skip
async def test_a_use_against_a_target_the_exception_does_not_cover_is_dropped(world: World, target: str) -> None:
    await world.add()
    recorder = UsageRecorder(world.store.apikeys, world.trail, flush_interval=0, clock=world.clock)
    await recorder.record(WEB, EgressReport(uses=(UseCount("stripe", 1, target, 3, world.now()),)))
    await recorder.flush()
    assert await world.store.apikeys.uses() == ()
    assert [event for event, _ in await world.events() if event == "apikey.used"] == []
    await recorder.close()


async def test_a_use_time_from_a_clock_ahead_counts_as_now(world: World) -> None:
    await world.add()
    recorder = UsageRecorder(world.store.apikeys, world.trail, flush_interval=0, clock=world.clock)
    await recorder.record(WEB, EgressReport(uses=(_use(world.now() + timedelta(days=30)),)))
    await recorder.flush()
    assert (await world.store.apikeys.uses())[0].last_used_at == world.now()
    await recorder.close()


async def test_each_report_puts_its_uses_in_the_journal_one_record_per_version_and_target(world: World) -> None:
    await world.add()
    recorder = UsageRecorder(world.store.apikeys, world.trail, flush_interval=60, clock=world.clock)
    now = world.now()
    await recorder.record(WEB, EgressReport(uses=(_use(now - timedelta(seconds=5), 3), _use(now, 2),
                                                  _use(now, 1, version=2))))  # fmt: skip
    await recorder.record(OTHER, EgressReport(uses=(_use(now, 7),)))  # not allowed: neither stored nor journaled
    bodies = [body for event, body in await world.events() if event == "apikey.used"]
    assert bodies == [
        {"spiffe_id": WEB, "name": "stripe", "version": 1, "target": TARGET, "count": 5,
         "last_at": int(now.timestamp())},
        {"spiffe_id": WEB, "name": "stripe", "version": 2, "target": TARGET, "count": 1,
         "last_at": int(now.timestamp())},
    ]  # fmt: skip
    await recorder.close()


def test_merge_keeps_the_later_use_and_adds_the_counts() -> None:
    t = datetime.fromisoformat("2026-12-01T00:00:00+00:00")
    rows = [UseRecord("a", WEB, 1, TARGET, 2, t), UseRecord("a", WEB, 1, TARGET, 3, t - timedelta(hours=1)),
            UseRecord("a", WEB, 2, TARGET, 1, t)]  # fmt: skip
    assert merge_uses(rows) == [UseRecord("a", WEB, 1, TARGET, 5, t), UseRecord("a", WEB, 2, TARGET, 1, t)]


async def test_refusals_are_audited_merged_and_a_placeholder_sent_elsewhere_is_a_suspected_exfiltration(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = UsageRecorder(world.store.apikeys, world.trail, clock=world.clock)
    now = world.now()
    evil = "https://paste.example.net:443/upload"
    report = EgressReport(refusals=(
        EgressRefusal("stripe", evil, "placeholder_to_other_target", now - timedelta(seconds=3)),
        EgressRefusal("stripe", evil, "placeholder_to_other_target", now),
        EgressRefusal(None, "https://example.com:443/", "target_not_covered", now),
    ))  # fmt: skip
    await recorder.record(WEB, report)
    bodies = [body for event, body in await world.events() if event == "apikey.egress_refused"]
    assert bodies == [
        {"spiffe_id": WEB, "name": "stripe", "target": evil, "reason": "placeholder_to_other_target", "count": 2,
         "first_at": int(now.timestamp()) - 3, "last_at": int(now.timestamp()), "suspected_exfiltration": True},
        {"spiffe_id": WEB, "name": None, "target": "https://example.com:443/", "reason": "target_not_covered",
         "count": 1, "first_at": int(now.timestamp()), "last_at": int(now.timestamp()),
         "suspected_exfiltration": False},
    ]  # fmt: skip
    assert "possible exfiltration attempt" in caplog.text and evil not in caplog.text


async def test_a_report_the_audit_trail_cannot_take_is_refused_whole(world: World) -> None:
    await world.add()

    class Full:
        def record(self, event: object) -> bool:
            return False

    recorder = UsageRecorder(world.store.apikeys, Full(), flush_interval=0, clock=world.clock)
    refusal = EgressRefusal("stripe", TARGET, "not_granted", world.now())
    with pytest.raises(TemporarilyUnavailableError):
        await recorder.record(WEB, EgressReport(uses=(_use(world.now()),), refusals=(refusal,)))
    assert recorder.writer.pending == 0


async def test_the_report_shows_owner_status_expiry_review_last_use_per_workload_idle_days_and_reveal(
    world: World,
) -> None:
    await world.add()
    world.registry.rules = GovernanceRules(allow_reveal=True)
    await world.add(sample(name="maps", delivery=Delivery.REVEAL, review_interval=timedelta(days=5)))
    t0 = world.now()
    await world.store.apikeys.record_uses([
        UseRecord("stripe", WEB, 1, TARGET, 4, t0 + timedelta(days=1)),
        UseRecord("stripe", OTHER, 1, TARGET, 1, t0 + timedelta(days=3)),
        UseRecord("stripe", WEB, 1, "https://api.stripe.com:443/v2/", 2, t0 + timedelta(days=2)),
    ])  # fmt: skip
    world.clock.advance(timedelta(days=40).total_seconds())
    report = await world.registry.report(unused_days=30)
    maps, stripe = report.rows
    assert (stripe.owner, stripe.status, stripe.days_to_expiry) == ("payments", Status.REVIEW_OVERDUE, 50)
    assert [(u.spiffe_id, u.count) for u in stripe.uses] == [(OTHER, 1), (WEB, 6)]
    assert stripe.last_used_at == t0 + timedelta(days=3) and stripe.idle_days == 37 and stripe.unused
    assert stripe.review_overdue and not stripe.grantable and not stripe.reveal
    assert maps.reveal and maps.last_used_at is None and maps.idle_days == 40


def test_fail_on_terms_are_parsed_strictly() -> None:
    assert FailOn.parse("overdue,expiring:14d,unused:30d,reveal") == FailOn(True, True, 14, 30)
    for bad in ("", "overdue,", "overdue, reveal", "expiring:14", "expiring:0d", "expiring:14D", "unused:-1d",
                "unused:99999d", "stale", "overdue,overdue", "expiring:+14d"):  # fmt: skip
        with pytest.raises(ValueError, match="--fail-on"):
            FailOn.parse(bad)


async def test_fail_on_matches_the_rows_it_names_and_never_a_revoked_one(world: World) -> None:
    await world.add(sample(expires_at=world.now() + timedelta(days=10)))
    row = (await world.registry.report()).rows[0]
    assert FailOn.parse("expiring:14d").matches(row) == ["expiring:14d"]
    assert FailOn.parse("expiring:7d,overdue,reveal").matches(row) == []
    assert FailOn.parse("unused:1d").matches(row) == []  # created today
    await world.registry.revoke("stripe", "replaced by OAuth", ADMIN)
    assert FailOn.parse("expiring:14d").matches((await world.registry.report()).rows[0]) == []


def test_unused_days_is_bounded() -> None:
    with pytest.raises(ValueError, match="unused_days"):
        build_report([], [], datetime.fromisoformat("2026-12-01T00:00:00+00:00"), GovernanceRules(), unused_days=0)
