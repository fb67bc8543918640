"""A world for API-key exception tests: the in-memory store twin, a real KEK ring, a real audit trail over the
store's journal, a revocation index for quarantines, a manual clock, and the registry and grant decision on them.

``CANARY`` is the secret every test registers: a test that reads the journal, the revocation log, a log line or
an error body looks for it there.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker._sealing import Kek, KekRing
from broker.apikeys.decision import GrantDecider
from broker.apikeys.model import ApiKeyException, Presentation, Target
from broker.apikeys.registry import ApiKeyRegistry
from broker.apikeys.rules import GovernanceRules
from broker.audit.trail import AuditTrail
from broker.events.revocations import (
    ExceptionWithdrawn,
    LogEntry,
    RevocationEvent,
    RevocationIndex,
    SubjectPattern,
    SubjectQuarantined,
)
from broker.store import latest_version
from broker.store.memory import MemoryStore
from broker.testing import ManualClock

ADMIN = "spiffe://example.org/ops/admin"
WEB = "spiffe://example.org/ns/shop/sa/web"
SHOP_PREFIX = "spiffe://example.org/ns/shop/*"
CANARY = b"sk_live_CANARY0123456789abcdefXYZ"
CANARY_2 = b"sk_live_CANARY-second-version-42"


def sample(**changes: Any) -> ApiKeyException:
    """A valid exception as an admin submits it (no state, review or version fields of its own)."""
    base = ApiKeyException(
        name="stripe",
        target=Target("api.stripe.com", 443, "/v1/"),
        owner="payments",
        contact="payments-oncall@example.org",
        justification="Stripe offers no workload identity federation for its API",
        ticket="SEC-1234",
        expires_at=datetime(2027, 3, 1, tzinfo=UTC),
        review_interval=timedelta(days=30),
        allowed=(SubjectPattern.parse(WEB),),
        presentation=Presentation("header", "Authorization", "Bearer {secret}"),
    )
    return replace(base, **changes)


class RecordingLog:
    """The revocation log as the registry appends to it: entries in order with gap-free ``seq``. (The store's own
    logs are held to the same contract by tests/unit/store; this one keeps the registry's tests on their own.)"""

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []

    async def append(self, events: Sequence[RevocationEvent]) -> tuple[LogEntry, ...]:
        added = tuple(LogEntry(len(self.entries) + i + 1, event) for i, event in enumerate(events))
        self.entries.extend(added)
        return added


@dataclass
class World:
    clock: ManualClock
    store: MemoryStore
    keks: KekRing
    trail: AuditTrail
    rules: GovernanceRules
    registry: ApiKeyRegistry
    quarantines: RevocationIndex
    decider: GrantDecider
    revocations: RecordingLog

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def journal(self) -> list[tuple[str, dict[str, Any]]]:
        await self.trail.flush()
        return [(r.event, json.loads(r.body)) for r in await self.store.audit.read(1, 10_000)]

    async def journal_bytes(self) -> bytes:
        await self.trail.flush()
        return b"\n".join(r.body for r in await self.store.audit.read(1, 10_000))

    async def events(self, prefix: str = "apikey.") -> list[tuple[str, dict[str, Any]]]:
        return [(event, body) for event, body in await self.journal() if event.startswith(prefix)]

    async def log(self) -> list[RevocationEvent]:
        return [entry.event for entry in self.revocations.entries]

    async def withdrawals(self) -> list[ExceptionWithdrawn]:
        return [event for event in await self.log() if isinstance(event, ExceptionWithdrawn)]

    def quarantine(self, pattern: str) -> None:
        now = self.now()
        event = SubjectQuarantined(SubjectPattern.parse(pattern), now, None, now + timedelta(hours=1), "drill")
        self.quarantines.apply(LogEntry(self.quarantines.seq + 1, event))

    async def add(self, record: ApiKeyException | None = None, secret: bytes = CANARY) -> ApiKeyException:
        return await self.registry.add(record or sample(), secret, ADMIN)


def build_world(clock: ManualClock, trail_store: MemoryStore, rules: GovernanceRules, trail: AuditTrail) -> World:
    keks, quarantines, log = KekRing(Kek.generate()), RevocationIndex(), RecordingLog()
    registry = ApiKeyRegistry(trail_store.apikeys, log, trail, keks, rules, clock=clock)
    decider = GrantDecider(trail_store.apikeys, keks, rules, quarantines, trail, clock=clock)
    return World(clock, trail_store, keks, trail, rules, registry, quarantines, decider, log)


T_START = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def rules() -> GovernanceRules:
    return GovernanceRules()


@pytest.fixture
async def world(rules: GovernanceRules) -> AsyncIterator[World]:
    store = MemoryStore(latest_version())
    async with AuditTrail(store.audit, batch_window=0.001) as trail:
        yield build_world(ManualClock(T_START.timestamp()), store, rules, trail)
