"""The grant cache and the reporter against a scripted token service link and a manual clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from broker.apikeys.grant import MAX_REPORT_ITEMS, Catalog, EgressReport, Grant
from broker.apikeys.model import Delivery, Presentation, Target
from broker.events.revocations import ExceptionWithdrawn, LogEntry, RevocationIndex
from broker.sidecar.egress.client import ApiKeyRefusedError, ApiKeyServiceUnavailableError
from broker.sidecar.egress.errors import EgressUnavailableError, NotGrantedError
from broker.sidecar.egress.grants import GrantCache
from broker.sidecar.egress.report import EgressReporter
from broker.testing import ManualClock

SECRET = "sk_live_grant_cache_TEST_0123456789"
HOLD = 60.0


@dataclass
class ScriptedLink:
    """A token service link whose answers the test sets; grants are stamped with the manual clock."""

    clock: ManualClock
    mode: str = "grant"  # grant | down | refuse
    gate: asyncio.Event | None = None
    asked: list[str] = field(default_factory=list)
    reports: list[EgressReport] = field(default_factory=list)

    async def catalog(self) -> Catalog:
        return Catalog(())

    async def grant(self, name: str) -> Grant:
        self.asked.append(name)
        if self.gate is not None:
            await self.gate.wait()
        if self.mode == "down":
            raise ApiKeyServiceUnavailableError("connection refused")
        if self.mode == "refuse":
            raise ApiKeyRefusedError(403, "access_denied", f"exception {name} is suspended")
        now = datetime.fromtimestamp(self.clock(), UTC)
        return Grant(name, len(self.asked), SECRET, Target("api.example.com"), Presentation("header", "X-Key"),
                     Delivery.INJECT, now, now + timedelta(seconds=HOLD))  # fmt: skip

    async def report(self, report: EgressReport) -> None:
        if self.mode == "down":
            raise ApiKeyServiceUnavailableError("connection refused")
        if self.mode == "refuse":
            raise ApiKeyRefusedError(400, "invalid_request", "no")
        self.reports.append(report)

    async def aclose(self) -> None:
        return None


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def link(clock: ManualClock) -> ScriptedLink:
    return ScriptedLink(clock)


@pytest.fixture
def grants(link: ScriptedLink, clock: ManualClock) -> GrantCache:
    return GrantCache(link, clock=clock)


def withdrawn(name: str, at: float) -> RevocationIndex:
    index = RevocationIndex()
    when = datetime.fromtimestamp(at, UTC)
    index.apply(LogEntry(1, ExceptionWithdrawn(name, when, when + timedelta(hours=1))))
    return index


async def test_concurrent_requests_without_a_grant_share_one_request(grants: GrantCache, link: ScriptedLink) -> None:
    link.gate = asyncio.Event()
    waiting = [asyncio.create_task(grants.get("stripe")) for _ in range(20)]
    await asyncio.sleep(0)
    link.gate.set()
    got = await asyncio.gather(*waiting)

    assert link.asked == ["stripe"]
    assert {grant.version for grant in got} == {1}


async def test_past_the_refresh_point_the_grant_is_served_while_a_new_one_is_fetched(
    grants: GrantCache, link: ScriptedLink, clock: ManualClock
) -> None:
    first = await grants.get("stripe")
    clock.advance(HOLD * 0.8)
    still = await grants.get("stripe")
    await grants.settled()
    fresh = await grants.get("stripe")

    assert (first.version, still.version, fresh.version) == (1, 1, 2)


async def test_a_grant_is_never_used_past_its_lifetime_whatever_the_token_services_clock(
    grants: GrantCache, link: ScriptedLink, clock: ManualClock
) -> None:
    link.clock = ManualClock(clock() - 3600)  # the token service's clock an hour behind: hold_until long past here
    await grants.get("stripe")
    clock.advance(HOLD - 1)
    link.mode = "down"
    held = await grants.get("stripe")
    clock.advance(1)

    assert held.version == 1
    with pytest.raises(EgressUnavailableError, match="token service is unavailable"):
        await grants.get("stripe")


async def test_a_refusal_drops_the_held_grant_and_is_not_granted(
    grants: GrantCache, link: ScriptedLink, clock: ManualClock
) -> None:
    await grants.get("stripe")
    link.mode = "refuse"
    clock.advance(HOLD * 0.8)
    await grants.get("stripe")  # still the held one; its refresh is refused
    await grants.settled()

    assert len(grants) == 0
    with pytest.raises(NotGrantedError, match="suspended") as caught:
        await grants.get("stripe")
    assert caught.value.reason == "not_granted" and SECRET not in repr(caught.value)


async def test_a_withdrawal_drops_grants_made_before_it_and_keeps_later_ones(
    grants: GrantCache, clock: ManualClock
) -> None:
    await grants.get("stripe")
    await grants.get("maps")
    grants.feed_changed(withdrawn("stripe", clock() + 1), quarantined_until=None)

    assert len(grants) == 1
    clock.advance(2)
    again = await grants.get("stripe")  # granted after the withdrawal (the exception was reinstated)
    assert again.version == 3


async def test_a_grant_landing_after_a_withdrawal_it_predates_is_refused(
    grants: GrantCache, link: ScriptedLink, clock: ManualClock
) -> None:
    link.gate = asyncio.Event()
    asking = asyncio.create_task(grants.get("stripe"))
    await asyncio.sleep(0)
    grants.feed_changed(withdrawn("stripe", clock()), quarantined_until=None)
    link.gate.set()

    with pytest.raises(NotGrantedError, match="withdrawn"):
        await asking
    assert len(grants) == 0


async def test_a_quarantine_drops_every_grant_and_refuses_until_it_ends(
    grants: GrantCache, link: ScriptedLink, clock: ManualClock
) -> None:
    await grants.get("stripe")
    grants.feed_changed(RevocationIndex(), quarantined_until=clock() + 30)

    assert len(grants) == 0
    with pytest.raises(NotGrantedError, match="quarantined"):
        await grants.get("stripe")
    clock.advance(31)
    assert (await grants.get("stripe")).version == 2
    assert link.asked == ["stripe", "stripe"]


async def test_exceptions_that_leave_the_catalog_lose_their_grant(grants: GrantCache) -> None:
    await grants.get("stripe")
    await grants.get("maps")
    grants.retain(["maps"])

    assert len(grants) == 1


async def test_uses_are_aggregated_and_refusals_deduplicated_per_flush(link: ScriptedLink, clock: ManualClock) -> None:
    reporter = EgressReporter(link, clock=clock)
    for _ in range(5):
        reporter.used("stripe", 2, "https://api.example.com:443")
        clock.advance(1)
    reporter.refused("stripe", "https://other.example:443/x", "placeholder_to_other_target")
    reporter.refused("stripe", "https://other.example:443/x", "placeholder_to_other_target")
    assert await reporter.flush()

    (report,) = link.reports
    (use,) = report.uses
    assert (use.name, use.version, use.count) == ("stripe", 2, 5)
    assert use.last_used_at.timestamp() == clock() - 1
    assert [(r.name, r.reason) for r in report.refusals] == [("stripe", "placeholder_to_other_target")]
    assert await reporter.flush() and len(link.reports) == 1  # nothing new: nothing sent


async def test_a_report_that_does_not_get_through_is_sent_with_the_next_one(link: ScriptedLink) -> None:
    reporter = EgressReporter(link)
    reporter.used("stripe", 1, "https://a:443")
    link.mode = "down"
    assert not await reporter.flush()
    reporter.used("stripe", 1, "https://a:443")
    link.mode = "grant"
    assert await reporter.flush()

    assert [u.count for u in link.reports[0].uses] == [2]


async def test_a_report_the_token_service_refuses_is_dropped(link: ScriptedLink) -> None:
    reporter = EgressReporter(link)
    reporter.used("stripe", 1, "https://a:443")
    link.mode = "refuse"
    assert not await reporter.flush()

    assert reporter.pending() == 0


async def test_the_reporter_holds_at_most_one_report_worth_of_items(link: ScriptedLink) -> None:
    reporter = EgressReporter(link)
    for i in range(MAX_REPORT_ITEMS + 10):
        reporter.used("stripe", 1, f"https://host-{i}:443")
        reporter.refused(None, f"https://host-{i}:443/", "target_not_covered")

    assert reporter.pending() == 2 * MAX_REPORT_ITEMS
    assert reporter.lost == 20
    assert await reporter.flush()
    assert len(link.reports[0].uses) == len(link.reports[0].refusals) == MAX_REPORT_ITEMS
