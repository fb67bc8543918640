"""Shared parts of the keyring tests: a schedule, KEKs, a clock, and readers of a store's states."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from broker._sealing import Kek, KekRing
from broker.testing import ManualClock
from broker.tokens.keyring import BlastRadiusSource, Keyring
from broker.tokens.keys import SigningKey
from broker.tokens.keystore import KeyringStore, KeyState
from broker.tokens.rotation import RotationSchedule

PERIOD, MAX_AGE, LIFETIME, LEEWAY = 3600.0, 300.0, 600.0, 60.0
SCHEDULE = RotationSchedule(period=PERIOD, jwks_max_age=MAX_AGE, max_token_lifetime=LIFETIME, leeway=LEEWAY)
PUBLISH_LEAD = MAX_AGE + LEEWAY
RETIRE_AFTER = LIFETIME + LEEWAY
KEK_1 = Kek(bytes(range(32)))
KEK_2 = Kek(bytes(range(100, 132)))


async def open_keyring(
    store: KeyringStore,
    clock: ManualClock,
    keks: KekRing | None = None,
    *,
    legacy_dir: Path | None = None,
    blast_radius: BlastRadiusSource | None = None,
) -> Keyring:
    return await Keyring.open(store, keks or KekRing(KEK_1), SCHEDULE, clock, legacy_dir, blast_radius=blast_radius)


async def states(store: KeyringStore) -> dict[str, KeyState]:
    return {k.kid: k.state for k in await store.keys()}


async def kids_in(store: KeyringStore, state: KeyState) -> list[str]:
    return [kid for kid, s in (await states(store)).items() if s is state]


def published_kids(keyring: Keyring) -> set[str]:
    return {k.kid for k in keyring.published_keys()}


def at(clock: ManualClock) -> datetime:
    return datetime.fromtimestamp(clock(), UTC)


def verifies(public_of: SigningKey, signer: SigningKey, message: bytes = b"header.payload") -> bool:
    """True if ``signer``'s ES256 signature over ``message`` verifies with ``public_of``'s public key."""
    raw = signer.sign(message)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        public_of.private_key.public_key().verify(der, message, ec.ECDSA(hashes.SHA256()))
    except Exception:
        return False
    return True
