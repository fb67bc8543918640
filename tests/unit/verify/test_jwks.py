"""Tests for broker.verify.jwks: JWK Set parsing, discovery through RFC 8414 metadata, caching, rate limits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker.testing import ManualClock
from broker.verify.jwks import JwksFetchError, RemoteJwksProvider, parse_jwks
from tests.unit.verify.verify_helpers import ISSUER, Signer

METADATA_URL = f"{ISSUER}/.well-known/oauth-authorization-server"
JWKS_URL = f"{ISSUER}/jwks.json"


class FakeIssuer:
    """Serves metadata and a JWKS from memory and counts fetches; ``down`` makes every fetch fail.

    ``called`` is set on every fetch. Without a ``gate`` a fetch never suspends, so when a waiter on ``called``
    wakes, the provider's background refresh has run to its end.
    """

    def __init__(self, *signers: Signer) -> None:
        self.metadata: dict[str, Any] = {"issuer": ISSUER, "jwks_uri": JWKS_URL, "response_types_supported": []}
        self.keys = [s.jwk() for s in signers]
        self.fetches: list[str] = []
        self.down = False
        self.gate: asyncio.Event | None = None
        self.called = asyncio.Event()

    async def __call__(self, url: str) -> object:
        self.fetches.append(url)
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise JwksFetchError("issuer down")
        if url == METADATA_URL:
            return self.metadata
        if url == JWKS_URL:
            return {"keys": self.keys}
        raise JwksFetchError(f"unexpected URL {url}")

    @property
    def jwks_fetches(self) -> int:
        return self.fetches.count(JWKS_URL)


def provider(issuer: FakeIssuer, clock: ManualClock) -> RemoteJwksProvider:
    return RemoteJwksProvider(issuer=ISSUER, fetch_json=issuer, clock=clock)


async def test_keys_are_found_through_the_issuer_metadata_and_cached() -> None:
    signer = Signer(kid="k1")
    issuer, clock = FakeIssuer(signer), ManualClock(1000.0)
    jwks = provider(issuer, clock)
    key = await jwks.get_key("k1")
    assert key is not None and key.public_key.public_numbers() == signer.key.public_key().public_numbers()
    assert issuer.fetches == [METADATA_URL, JWKS_URL]
    assert jwks.cached_key("k1") is key
    assert await jwks.get_key("k1") is key
    assert issuer.jwks_fetches == 1


async def test_unknown_kid_refetches_once_then_fails() -> None:
    issuer, clock = FakeIssuer(Signer(kid="k1")), ManualClock(1000.0)
    jwks = provider(issuer, clock)
    await jwks.get_key("k1")
    clock.now += 30
    assert await jwks.get_key("made-up") is None
    assert issuer.jwks_fetches == 2
    assert await jwks.get_key("made-up-too") is None
    assert issuer.jwks_fetches == 2  # rate limited


async def test_refetch_on_unknown_kid_is_rate_limited_to_once_per_interval() -> None:
    issuer, clock = FakeIssuer(Signer(kid="k1")), ManualClock(1000.0)
    jwks = provider(issuer, clock)
    await jwks.get_key("k1")
    await jwks.get_key("x")
    clock.now += 29
    await jwks.get_key("y")
    assert issuer.jwks_fetches == 1  # at most one fetch per 30 s, whatever the kid
    clock.now += 1
    await jwks.get_key("z")
    assert issuer.jwks_fetches == 2
    clock.now += 10
    await jwks.get_key("z")
    assert issuer.jwks_fetches == 2


async def test_key_rotated_in_at_the_issuer_is_picked_up_on_first_use() -> None:
    old, new = Signer(kid="old"), Signer(kid="new")
    issuer, clock = FakeIssuer(old), ManualClock(1000.0)
    jwks = provider(issuer, clock)
    await jwks.get_key("old")
    clock.now += 60
    issuer.keys = [new.jwk(), old.jwk()]
    assert await jwks.get_key("new") is not None
    assert await jwks.get_key("old") is not None


async def test_concurrent_lookups_of_an_unknown_kid_share_one_fetch() -> None:
    issuer, clock = FakeIssuer(Signer(kid="k1")), ManualClock(1000.0)
    issuer.gate = asyncio.Event()
    jwks = provider(issuer, clock)
    lookups = [asyncio.create_task(jwks.get_key("k1")) for _ in range(50)]
    await asyncio.wait_for(issuer.called.wait(), 5)  # the fetch waits at the gate; every lookup has joined it
    issuer.gate.set()
    assert all(key is not None for key in await asyncio.gather(*lookups))
    assert issuer.jwks_fetches == 1


async def test_a_lookup_arriving_while_the_first_fetch_is_in_flight_waits_for_it_instead_of_failing() -> None:
    issuer, clock = FakeIssuer(Signer(kid="k1")), ManualClock(1000.0)
    issuer.gate = asyncio.Event()
    jwks = provider(issuer, clock)
    first = asyncio.create_task(jwks.get_key("k1"))
    await asyncio.wait_for(issuer.called.wait(), 5)  # the fetch has started: the rate limit's clock is running
    late = asyncio.create_task(jwks.get_key("k1"))
    await asyncio.sleep(0)
    issuer.gate.set()
    assert await first is not None and await late is not None
    assert issuer.jwks_fetches == 1


async def test_stale_keys_are_served_while_a_background_refresh_runs_and_kept_if_it_fails() -> None:
    issuer, clock = FakeIssuer(Signer(kid="k1")), ManualClock(1000.0)
    jwks = provider(issuer, clock)
    await jwks.get_key("k1")
    clock.now += 301
    issuer.down = True
    issuer.called.clear()
    assert jwks.cached_key("k1") is not None
    await asyncio.wait_for(issuer.called.wait(), 5)
    assert issuer.fetches[-1] == METADATA_URL  # the refresh was attempted
    assert await jwks.get_key("k1") is not None  # and failed: the last good keys stay


async def test_key_removed_at_the_issuer_disappears_after_max_age() -> None:
    issuer, clock = FakeIssuer(Signer(kid="k1")), ManualClock(1000.0)
    jwks = provider(issuer, clock)
    await jwks.get_key("k1")
    issuer.keys = []
    clock.now += 301
    issuer.called.clear()
    jwks.cached_key("k1")
    await asyncio.wait_for(issuer.called.wait(), 5)
    assert jwks.cached_key("k1") is None


async def test_a_max_age_shorter_than_the_unknown_kid_limit_still_refreshes_the_keys_in_time() -> None:
    """A key published as ``next`` for ``max_age`` seconds must reach the verifier before it signs (the rotation
    schedule's overlap rule): the unknown-kid rate limit (30 s) must not hold the stale refresh back."""
    issuer, clock = FakeIssuer(Signer(kid="k1")), ManualClock(1000.0)
    jwks = RemoteJwksProvider(issuer=ISSUER, fetch_json=issuer, clock=clock, max_age=5.0)
    await jwks.get_key("k1")
    issuer.keys = [*issuer.keys, *FakeIssuer(Signer(kid="k2")).keys]
    clock.now += 6
    issuer.called.clear()
    jwks.cached_key("k1")
    await asyncio.wait_for(issuer.called.wait(), 5)
    await asyncio.sleep(0)
    assert jwks.cached_key("k2") is not None


async def test_unreachable_issuer_at_start_is_retried_after_a_short_interval() -> None:
    issuer, clock = FakeIssuer(Signer(kid="k1")), ManualClock(1000.0)
    issuer.down = True
    jwks = provider(issuer, clock)
    assert await jwks.get_key("k1") is None
    issuer.down = False
    assert await jwks.get_key("k1") is None  # still within the 1 s retry interval
    clock.now += 1
    assert await jwks.get_key("k1") is not None


@pytest.mark.parametrize(
    "metadata",
    [
        {"issuer": "https://evil.example", "jwks_uri": JWKS_URL},
        {"issuer": ISSUER},
        {"issuer": ISSUER, "jwks_uri": "http://broker.example.org/jwks.json"},
        ["not", "an", "object"],
    ],
    ids=["issuer-mismatch", "no-jwks-uri", "jwks-uri-not-https", "not-an-object"],
)
async def test_unusable_metadata_yields_no_keys(metadata: Any) -> None:
    issuer, clock = FakeIssuer(Signer(kid="k1")), ManualClock(1000.0)
    issuer.metadata = metadata
    jwks = provider(issuer, clock)
    assert await jwks.get_key("k1") is None
    with pytest.raises(JwksFetchError):
        await jwks.refresh()
    assert issuer.jwks_fetches == 0


def test_jwks_parsing_keeps_only_usable_ec_signature_keys() -> None:
    good, encryption, other_alg, dup_a, dup_b = (Signer(kid=k) for k in ("good", "enc", "rsa", "dup", "dup"))
    off_curve = Signer(kid="off").jwk()
    off_curve["y"] = off_curve["x"]
    document = {
        "keys": [
            good.jwk(alg="ES256"),
            encryption.jwk(use="enc"),
            other_alg.jwk(alg="RS256"),
            {"kty": "RSA", "kid": "rsa-key", "n": "AQAB", "e": "AQAB"},
            {k: v for k, v in Signer(kid="nokid").jwk().items() if k != "kid"},
            off_curve,
            dup_a.jwk(),
            dup_b.jwk(),
            "not an object",
        ]
    }
    keys = parse_jwks(document)
    assert list(keys) == ["good"]
    assert keys["good"].alg == "ES256"


def test_jwks_without_keys_array_is_refused() -> None:
    with pytest.raises(JwksFetchError):
        parse_jwks({"kids": []})
