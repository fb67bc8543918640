"""broker.sidecar.cache with DPoP-bound tokens (RFC 9449 §6.1 ``cnf.jkt``): keyed by the SVID key, not the cert."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from broker.identity.memory import InMemorySvidSource
from broker.identity.svid import X509Svid
from broker.sidecar.cache import TokenCache
from broker.sidecar.dpop import current_jkt
from broker.sidecar.token_result import TokenResult
from broker.testing import ManualClock
from tests.unit.sidecar.sidecar_helpers import API

KEY = (API, None)


class KeyBoundExchanger:
    """Issues tokens bound to the source's current SVID key; ``rotate_during_first`` rotates mid-exchange."""

    def __init__(self, source: InMemorySvidSource, *, rotate_during_first: bool = False) -> None:
        self.source = source
        self.rotate_during_first = rotate_during_first
        self.calls = 0

    async def exchange(self, audience: str, scope: str | None) -> TokenResult:
        self.calls += 1
        jkt = current_jkt(self.source)
        if self.calls == 1 and self.rotate_during_first:
            self.source.rotate()
        return TokenResult(access_token=f"dpop-{self.calls}", expires_in=300, token_type="DPoP", bound_jkt=jkt)


class ReissuingSource:
    """An SVID source whose next SVID may keep the previous key (a new certificate for the same key)."""

    def __init__(self, svid: X509Svid) -> None:
        self.svid = svid
        self.callbacks: list[Callable[[], None]] = []

    def x509_svid(self) -> X509Svid:
        return self.svid

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        self.callbacks.append(callback)
        return lambda: None

    def push(self, svid: X509Svid) -> None:
        self.svid = svid
        for callback in self.callbacks:
            callback()


async def test_rotation_to_a_new_key_drops_tokens_bound_to_the_old_key(
    workload_source: InMemorySvidSource, clock: ManualClock
) -> None:
    exchanger = KeyBoundExchanger(workload_source)
    cache = TokenCache(exchanger=exchanger, source=workload_source, clock=clock)
    old = await cache.get(KEY)
    assert old.bound_jkt == current_jkt(workload_source)
    workload_source.rotate()
    assert len(cache) == 0
    fresh = await cache.get(KEY)
    assert fresh.bound_jkt == current_jkt(workload_source) != old.bound_jkt
    await cache.aclose()


async def test_a_new_certificate_for_the_same_key_keeps_dpop_tokens(
    workload_source: InMemorySvidSource, clock: ManualClock
) -> None:
    first = workload_source.x509_svid()
    source = ReissuingSource(first)
    exchanger = KeyBoundExchanger(workload_source)  # bound to first's key
    cache = TokenCache(exchanger=exchanger, source=source, clock=clock)
    token = await cache.get(KEY)
    reissued = dataclasses.replace(workload_source.rotate(), private_key=first.private_key)
    source.push(reissued)
    assert reissued.x5t_s256() != first.x5t_s256()
    assert len(cache) == 1
    assert (await cache.get(KEY)) is token
    await cache.aclose()


async def test_token_bound_to_a_key_that_rotated_during_the_exchange_is_exchanged_again(
    workload_source: InMemorySvidSource, clock: ManualClock
) -> None:
    exchanger = KeyBoundExchanger(workload_source, rotate_during_first=True)
    cache = TokenCache(exchanger=exchanger, source=workload_source, clock=clock)
    token = await cache.get(KEY)
    assert (token.access_token, exchanger.calls) == ("dpop-2", 2)
    assert token.bound_jkt == current_jkt(workload_source)
    await cache.aclose()


async def test_the_app_sees_token_type_dpop(workload_source: InMemorySvidSource, clock: ManualClock) -> None:
    cache = TokenCache(exchanger=KeyBoundExchanger(workload_source), source=workload_source, clock=clock)
    body = cache.lookup(KEY) or (await cache.get(KEY)).body(clock())
    assert b'"token_type":"DPoP"' in body
    await cache.aclose()
