"""Tests for broker.sidecar.cache: single flight, refresh ahead, serving through outages, rotation."""

from __future__ import annotations

import asyncio
import json

import pytest

from broker.identity.memory import InMemorySvidSource
from broker.sidecar.cache import CachedToken, TokenCache
from broker.sidecar.errors import TokenServiceRefusedError, TokenServiceUnavailableError
from broker.sidecar.token_result import TokenResult
from broker.testing import FakeTokenService, ManualClock
from tests.unit.sidecar.sidecar_helpers import API

KEY = (API, "orders:read")


def make_cache(fake: FakeTokenService, source: InMemorySvidSource, clock: ManualClock) -> TokenCache:
    return TokenCache(exchanger=fake, source=source, clock=clock)


async def settle() -> None:
    """Let background tasks run to completion."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_two_hundred_concurrent_callers_for_a_cold_key_share_one_exchange(
    workload_source: InMemorySvidSource, clock: ManualClock
) -> None:
    fake = FakeTokenService(workload_source, gate=asyncio.Event())
    cache = make_cache(fake, workload_source, clock)
    callers = [asyncio.create_task(cache.get(KEY)) for _ in range(200)]
    await settle()
    assert fake.gate is not None
    fake.gate.set()
    tokens = await asyncio.gather(*callers)
    assert len(fake.calls) == 1
    assert {t.access_token for t in tokens} == {"token-1"}
    await cache.aclose()


async def test_cached_token_is_served_without_another_exchange(
    workload_source: InMemorySvidSource, clock: ManualClock
) -> None:
    fake = FakeTokenService(workload_source)
    cache = make_cache(fake, workload_source, clock)
    first = await cache.get(KEY)
    clock.advance(100)
    assert cache.lookup(KEY) is not None
    assert (await cache.get(KEY)) is first
    assert len(fake.calls) == 1
    await cache.aclose()


async def test_response_body_is_the_token_json_with_current_expires_in(
    workload_source: InMemorySvidSource, clock: ManualClock
) -> None:
    cache = make_cache(FakeTokenService(workload_source), workload_source, clock)
    await cache.get(KEY)
    clock.advance(10.5)
    body = cache.lookup(KEY)
    assert body is not None
    assert json.loads(body) == {
        "access_token": "token-1",
        "token_type": "Bearer",
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "scope": "orders:read",
        "expires_in": 289,
    }
    await cache.aclose()


@pytest.mark.parametrize(
    ("lifetime", "refresh_after"),
    [(300, 240.0), (60, 30.0), (20, 10.0)],
    ids=["long-lifetime-80-percent", "minute-30-seconds-before", "short-never-before-half"],
)
def test_refresh_point_is_80_percent_or_30_seconds_before_expiry_but_not_before_half(
    lifetime: int, refresh_after: float
) -> None:
    entry = CachedToken.from_result(
        TokenResult(access_token="t", expires_in=lifetime), now=0.0, refresh_fraction=0.8, refresh_margin=30.0
    )
    assert entry.refresh_at == pytest.approx(refresh_after)
    assert entry.expires_at == lifetime


async def test_past_refresh_point_the_current_token_is_served_while_one_refresh_runs(
    workload_source: InMemorySvidSource, clock: ManualClock
) -> None:
    fake = FakeTokenService(workload_source)
    cache = make_cache(fake, workload_source, clock)
    await cache.get(KEY)
    clock.advance(250)
    fake.gate = asyncio.Event()
    assert cache.lookup(KEY) is None  # the hot path leaves refreshing to get()
    served = await asyncio.gather(*(cache.get(KEY) for _ in range(20)))
    assert {t.access_token for t in served} == {"token-1"}
    await settle()
    assert len(fake.calls) == 2  # exactly one background refresh
    fake.gate.set()
    await settle()
    assert (await cache.get(KEY)).access_token == "token-2"
    await cache.aclose()


async def test_with_token_service_down_cached_token_is_served_until_it_expires(
    workload_source: InMemorySvidSource, clock: ManualClock
) -> None:
    fake = FakeTokenService(workload_source)
    cache = make_cache(fake, workload_source, clock)
    await cache.get(KEY)
    fake.failure = TokenServiceUnavailableError("down")
    for offset in (250, 20, 20):  # 250 s, 270 s, 290 s: refreshes fail, the token is still valid
        clock.advance(offset)
        assert (await cache.get(KEY)).access_token == "token-1"
        await settle()
    clock.advance(9.5)  # 299.5 s: less than min_remaining (1 s) left
    with pytest.raises(TokenServiceUnavailableError):
        await cache.get(KEY)
    await cache.aclose()


async def test_failed_background_refresh_backs_off_before_the_next_attempt(
    workload_source: InMemorySvidSource, clock: ManualClock
) -> None:
    fake = FakeTokenService(workload_source)
    cache = make_cache(fake, workload_source, clock)
    await cache.get(KEY)
    fake.failure = TokenServiceUnavailableError("down")
    clock.advance(250)
    await cache.get(KEY)
    await settle()
    assert len(fake.calls) == 2
    clock.advance(0.1)  # within the first backoff (0.5-1 s)
    await cache.get(KEY)
    await settle()
    assert len(fake.calls) == 2
    clock.advance(1.0)
    await cache.get(KEY)
    await settle()
    assert len(fake.calls) == 3
    await cache.aclose()


async def test_refusal_reaches_every_waiting_caller_and_is_not_cached(
    workload_source: InMemorySvidSource, clock: ManualClock
) -> None:
    fake = FakeTokenService(workload_source, failure=TokenServiceRefusedError("invalid_target", "no"))
    cache = make_cache(fake, workload_source, clock)
    results = await asyncio.gather(*(cache.get(KEY) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, TokenServiceRefusedError) for r in results)
    assert len(fake.calls) == 1
    fake.failure = None
    assert (await cache.get(KEY)).access_token == "token-2"
    await cache.aclose()


async def test_rotation_drops_tokens_bound_to_the_previous_certificate(
    workload_source: InMemorySvidSource, clock: ManualClock
) -> None:
    fake = FakeTokenService(workload_source)
    cache = make_cache(fake, workload_source, clock)
    old = await cache.get(KEY)
    other = await cache.get((API, None))
    new_svid = workload_source.rotate()
    assert len(cache) == 0
    fresh = await cache.get(KEY)
    assert fresh.access_token != old.access_token != other.access_token
    assert fresh.bound_x5t == new_svid.x5t_s256()
    await cache.aclose()


class RotatingExchanger:
    """The SVID rotates while the first exchange is in flight, which returns a token bound to the old cert."""

    def __init__(self, source: InMemorySvidSource) -> None:
        self.source = source
        self.calls = 0

    async def exchange(self, audience: str, scope: str | None) -> TokenResult:
        self.calls += 1
        bound = self.source.x509_svid().x5t_s256()
        if self.calls == 1:
            self.source.rotate()
            return TokenResult(access_token="stale", expires_in=300, bound_x5t=bound)
        return TokenResult(access_token="fresh", expires_in=300, bound_x5t=bound)


async def test_token_bound_to_a_certificate_that_rotated_during_the_exchange_is_exchanged_again(
    workload_source: InMemorySvidSource, clock: ManualClock
) -> None:
    exchanger = RotatingExchanger(workload_source)
    cache = TokenCache(exchanger=exchanger, source=workload_source, clock=clock)
    token = await cache.get(KEY)
    assert token.access_token == "fresh"
    assert token.bound_x5t == workload_source.x509_svid().x5t_s256()
    assert exchanger.calls == 2
    await cache.aclose()


async def test_cache_stays_within_max_entries(workload_source: InMemorySvidSource, clock: ManualClock) -> None:
    cache = TokenCache(exchanger=FakeTokenService(workload_source), source=workload_source, clock=clock, max_entries=3)
    for index in range(5):
        await cache.get((f"https://api{index}.example.org", None))
    assert len(cache) == 3
    await cache.aclose()


async def test_caller_cancelling_does_not_cancel_the_shared_exchange(
    workload_source: InMemorySvidSource, clock: ManualClock
) -> None:
    fake = FakeTokenService(workload_source, gate=asyncio.Event())
    cache = make_cache(fake, workload_source, clock)
    impatient = asyncio.create_task(cache.get(KEY))
    patient = asyncio.create_task(cache.get(KEY))
    await settle()
    impatient.cancel()
    await settle()
    assert fake.gate is not None
    fake.gate.set()
    assert (await patient).access_token == "token-1"
    assert len(fake.calls) == 1
    await cache.aclose()


async def test_close_stops_following_the_source(workload_source: InMemorySvidSource, clock: ManualClock) -> None:
    cache = make_cache(FakeTokenService(workload_source), workload_source, clock)
    await cache.get(KEY)
    await cache.aclose()
    workload_source.rotate()
    assert len(cache) == 1
