"""Tests for the DPoP replay check (RFC 9449 §11.1) and the stateless server nonces (§8, §9)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from broker.errors import InvalidDpopProofError
from broker.oauth.dpop import DpopProof, NonceMismatchError, ProofReplayedError, check_proof, check_proof_unused
from broker.oauth.dpop_nonce import NonceSource
from broker.oauth.replay import MemoryReplayCache, ReplayCacheUnavailable, ReplayKind, replay_key
from tests.unit.oauth.dpop_helpers import HTU, NOW, forge

WINDOW = 65.0  # max_age 60 + leeway 5


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def checked(key: ec.EllipticCurvePrivateKey, jti: str = "proof-1", iat: float = NOW) -> DpopProof:
    return check_proof(
        forge(key, jti=jti, iat=iat), htm="GET", htu=HTU, now=NOW, leeway=5, max_age=60, algorithms={"ES256"}
    )


async def test_a_proof_is_accepted_once(key: ec.EllipticCurvePrivateKey) -> None:
    cache = MemoryReplayCache()
    await check_proof_unused(checked(key), cache, now=NOW, window=WINDOW)
    with pytest.raises(ProofReplayedError) as caught:
        await check_proof_unused(checked(key), cache, now=NOW + 1, window=WINDOW)
    assert isinstance(caught.value, InvalidDpopProofError)


async def test_the_same_jti_from_another_key_is_not_a_replay(key: ec.EllipticCurvePrivateKey) -> None:
    cache = MemoryReplayCache()
    await check_proof_unused(checked(key), cache, now=NOW, window=WINDOW)
    await check_proof_unused(checked(ec.generate_private_key(ec.SECP256R1())), cache, now=NOW, window=WINDOW)


async def test_the_entry_is_keyed_by_thumbprint_and_jti_and_kept_until_iat_plus_window(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    cache = MemoryReplayCache()
    proof = checked(key, iat=NOW - 10)
    await check_proof_unused(proof, cache, now=NOW, window=WINDOW)
    entry = replay_key(ReplayKind.DPOP_PROOF, proof.jkt, proof.jti)
    assert not await cache.add(entry, now=datetime.fromtimestamp(NOW - 10 + WINDOW - 1, UTC), expires_at=_t(1e10))
    assert await cache.add(entry, now=datetime.fromtimestamp(NOW - 10 + WINDOW, UTC), expires_at=_t(1e10))


async def test_a_full_cache_fails_closed(key: ec.EllipticCurvePrivateKey) -> None:
    cache = MemoryReplayCache(max_entries=1)
    await check_proof_unused(checked(key, jti="a"), cache, now=NOW, window=WINDOW)
    with pytest.raises(ReplayCacheUnavailable):
        await check_proof_unused(checked(key, jti="b"), cache, now=NOW, window=WINDOW)


def _t(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_nonce_of_the_current_bucket_is_accepted_by_every_replica_sharing_the_secret() -> None:
    secret = secrets.token_bytes(32)
    clock = Clock(NOW)
    one, two = NonceSource(secret, clock=clock), NonceSource(secret, clock=clock)
    assert one.current() == two.current()
    assert two.check(one.current())


def test_nonce_of_the_previous_bucket_is_accepted_and_older_ones_are_not() -> None:
    clock = Clock(NOW)
    source = NonceSource(secrets.token_bytes(32), lifetime=60, clock=clock)
    nonce = source.current()
    clock.now += 60
    assert source.check(nonce) and source.current() != nonce
    clock.now += 60
    assert not source.check(nonce)


def test_nonce_from_the_future_is_refused() -> None:
    clock = Clock(NOW + 120)
    ahead = NonceSource(b"s" * 32, clock=clock).current()
    clock.now = NOW
    assert not NonceSource(b"s" * 32, clock=clock).check(ahead)


@pytest.mark.parametrize(
    "nonce",
    ["", "short", "A" * 32, "!" * 32, "é" * 32, "A" * 33],
    ids=["empty", "short", "zeros", "not-base64url", "non-ascii", "too-long"],
)
def test_garbage_nonce_is_refused(nonce: str) -> None:
    assert not NonceSource(secrets.token_bytes(32)).check(nonce)


def test_nonce_made_with_another_secret_is_refused() -> None:
    clock = Clock(NOW)
    forged = NonceSource(secrets.token_bytes(32), clock=clock).current()
    assert not NonceSource(secrets.token_bytes(32), clock=clock).check(forged)


def test_nonce_source_refuses_a_short_secret_and_never_shows_it() -> None:
    with pytest.raises(ValueError):
        NonceSource(b"short")
    secret = secrets.token_bytes(32)
    assert secret.hex() not in repr(NonceSource(secret)) and str(secret) not in repr(NonceSource(secret))


def test_check_proof_with_a_nonce_source_accepts_its_nonce_and_hands_out_a_fresh_one(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    clock = Clock(NOW)
    source = NonceSource(secrets.token_bytes(32), lifetime=30, clock=clock)
    arguments = {"htm": "GET", "htu": HTU, "now": NOW, "leeway": 5.0, "max_age": 60.0, "algorithms": {"ES256"}}
    stale = source.current()
    assert check_proof(forge(key, nonce=stale), nonce=source, **arguments).nonce == stale  # type: ignore[arg-type]
    clock.now += 60
    with pytest.raises(NonceMismatchError) as caught:
        check_proof(forge(key, nonce=stale), nonce=source, **arguments)  # type: ignore[arg-type]
    assert caught.value.nonce == source.current() and source.check(caught.value.headers["DPoP-Nonce"])
