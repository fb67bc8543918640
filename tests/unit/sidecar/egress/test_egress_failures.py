"""The egress proxy when something is wrong: a target's certificate, the token service down or refusing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.identity.memory import InMemorySvidSource
from broker.testing import ManualClock
from tests.unit.sidecar.egress.egress_helpers import App, running_egress
from tests.unit.sidecar.egress.fake_apikeys import SECRET, FakeApiKeys, entry
from tests.unit.sidecar.egress.target_server import TargetServer, TargetTls, target_server


@pytest.fixture
async def impostor(tls: TargetTls) -> AsyncIterator[TargetServer]:
    async with target_server(tls.impostor) as server:
        yield server


@pytest.mark.parametrize("case", ["untrusted-ca", "name-not-in-certificate"])
async def test_a_target_certificate_that_does_not_verify_is_refused_502_reported_and_sent_nothing(
    app: App, apikeys: FakeApiKeys, target: TargetServer, impostor: TargetServer, case: str
) -> None:
    if case == "untrusted-ca":
        apikeys.add(entry("shady", "other.example.test", impostor.port, slot="X-Key"), SECRET)
    else:
        apikeys.add(entry("shady", "unnamed.example.test", target.port, slot="X-Key"), SECRET)
    await app.egress.proxy.catalog.refresh()
    reply = await app.route("GET", "/shady/v1/x")
    await app.egress.proxy.reporter.flush()

    assert (reply.status, reply.error) == (502, "target_certificate")
    assert "did not verify" in reply.json()["error_description"]
    assert impostor.received == target.received == []
    assert apikeys.refusals() == [("shady", "target_certificate")]
    assert apikeys.uses() == {}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def timed_app(
    apikeys: FakeApiKeys, workload_source: InMemorySvidSource, tmp_short: Path, tls: TargetTls, clock: ManualClock
) -> AsyncIterator[App]:
    async with running_egress(apikeys, workload_source, tmp_short, tls.ca_file, clock=clock) as running:
        yield running


async def test_with_the_token_service_down_a_held_grant_serves_until_hold_until_then_503(
    timed_app: App, apikeys: FakeApiKeys, target: TargetServer, clock: ManualClock
) -> None:
    first = await timed_app.route("GET", "/stripe/v1/a")
    apikeys.available = False
    clock.advance(apikeys.hold - 1)  # past the refresh point: a background refresh fails, the grant is kept
    held = await timed_app.route("GET", "/stripe/v1/b")
    clock.advance(2)
    expired = await timed_app.route("GET", "/stripe/v1/c")

    assert (first.status, held.status) == (200, 200)
    assert (expired.status, expired.error) == (503, "temporarily_unavailable")
    assert "token service is unavailable" in expired.json()["error_description"]
    assert [r.path_qs for r in target.received] == ["/v1/a", "/v1/b"]


async def test_a_grant_is_used_until_its_hold_time_and_then_asked_for_again(
    timed_app: App, apikeys: FakeApiKeys, clock: ManualClock
) -> None:
    for _ in range(3):
        assert (await timed_app.route("GET", "/stripe/v1/a")).status == 200
    clock.advance(apikeys.hold + 1)
    assert (await timed_app.route("GET", "/stripe/v1/a")).status == 200

    assert apikeys.granted == ["stripe", "stripe"]


async def test_a_refusal_by_the_token_service_drops_the_held_grant_at_once(
    timed_app: App, apikeys: FakeApiKeys, target: TargetServer, clock: ManualClock
) -> None:
    assert (await timed_app.route("GET", "/stripe/v1/a")).status == 200
    apikeys.refused.add("stripe")
    clock.advance(apikeys.hold * 0.8)  # the background refresh is refused: the held grant goes with it
    await timed_app.route("GET", "/stripe/v1/b")
    await timed_app.egress.proxy.grants.settled()
    refused = await timed_app.route("GET", "/stripe/v1/c")
    await timed_app.egress.proxy.reporter.flush()

    assert (refused.status, refused.error) == (403, "not_granted")
    assert "suspended" in refused.json()["error_description"]
    assert "/v1/c" not in [r.path_qs for r in target.received]
    assert ("stripe", "not_granted") in apikeys.refusals()


async def test_before_the_first_catalog_a_request_waits_for_a_fetch_instead_of_failing_on_the_rate_limit(
    apikeys: FakeApiKeys, workload_source: InMemorySvidSource, tmp_short: Path, tls: TargetTls,
    target: TargetServer,
) -> None:  # fmt: skip
    """A sidecar's first catalog fetch may fail (its SVID arrives a moment later); the app's first request, within
    the miss rate limit of that failure, still gets a fresh fetch and goes through."""
    apikeys.available = False
    async with running_egress(apikeys, workload_source, tmp_short, tls.ca_file) as started:
        apikeys.available = True
        reply = await started.route("GET", "/stripe/v1/a")
    assert reply.status == 200, reply.text()
    assert apikeys.catalog_calls == 2
    assert [r.path_qs for r in target.received] == ["/v1/a"]
