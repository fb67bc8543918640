"""A real store with a keyring and issuance ledger rows in it, as the token service leaves it, for the CLI tests."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker._sealing import KekRing, generate_kek_file
from broker.audit.journal import AuditRecord
from broker.store import open_store
from broker.tokens.keyring import Keyring
from broker.tokens.keystore import KeyState
from broker.tokens.ledger import LedgerEntry
from broker.tokens.rotation import RotationSchedule

__all__ = ["API", "OTHER", "SCHEDULE", "WEB", "Seeded", "audit_records", "key_states", "seed"]

WEB = "spiffe://example.org/ns/shop/sa/web"
OTHER = "spiffe://example.org/ns/shop/sa/batch"
API = "https://api.example.org"
SCHEDULE = RotationSchedule(period=86400, jwks_max_age=300, max_token_lifetime=3600, leeway=60)


@dataclass(frozen=True)
class Seeded:
    url: str
    kek_file: Path
    active: str
    next: str


def _entries(kid: str) -> list[LedgerEntry]:
    """Three live tokens signed by ``kid`` (two for WEB, one for OTHER) and one expired."""
    now = datetime.now(UTC)
    live = [
        LedgerEntry(f"live-{n}", kid, subject, (API,), ("read",), "x5t#S256=abc", now - timedelta(minutes=1),
                    now + timedelta(minutes=5 + n))
        for n, subject in enumerate((WEB, WEB, OTHER))
    ]  # fmt: skip
    expired = LedgerEntry(
        "gone", kid, WEB, (API,), (), "x5t#S256=abc", now - timedelta(hours=1), now - timedelta(minutes=50)
    )
    return [*live, expired]


async def _seed(url: str, kek_file: Path, age: float) -> tuple[str, str]:
    store = await open_store(url)
    try:
        keks = KekRing.load(kek_file, [], {})
        keyring = await Keyring.open(store.keyring, keks, SCHEDULE, lambda: time.time() - age)
        active = keyring.active_key().kid
        next_kid = next(r.kid for r in await store.keyring.keys() if r.state is KeyState.NEXT)
        await store.ledger.record(_entries(active))
        return active, next_kid
    finally:
        await store.close()


def seed(url: str, directory: Path, *, age: float = 3600.0) -> Seeded:
    """A migrated store at ``url`` with an active and a next key made ``age`` seconds ago (so ``keys rotate`` may
    promote the next key), sealed under a new KEK file in ``directory``, and ledger rows for the active key."""
    kek_file = directory / "kek"
    generate_kek_file(kek_file)
    active, next_kid = asyncio.run(_seed(url, kek_file, age))
    return Seeded(url, kek_file, active, next_kid)


def key_states(url: str) -> dict[str, tuple[KeyState, str]]:
    """kid -> (state, kek_id)."""

    async def read() -> dict[str, tuple[KeyState, str]]:
        store = await open_store(url, migrate=False)
        try:
            return {r.kid: (r.state, r.kek_id) for r in await store.keyring.keys()}
        finally:
            await store.close()

    return asyncio.run(read())


def audit_records(url: str) -> list[AuditRecord]:
    async def read() -> list[AuditRecord]:
        store = await open_store(url, migrate=False)
        try:
            return list(await store.audit.read(1, 1000))
        finally:
            await store.close()

    return asyncio.run(read())
