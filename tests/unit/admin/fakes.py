"""Fakes of the admin API's ports: a keyring that refuses what the real one refuses, a recording audit, a reader.

Each fake records what it was asked to do, so a test can show that a refused call did nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.admin.errors import KidAlreadyRevokedError, KidNotFoundError
from broker.admin.ports import (
    AuditQuery,
    BlastRadius,
    KeyInfo,
    KeyRevocation,
    KeyRotation,
    StoreStatus,
    SubjectCount,
)
from broker.audit.journal import GENESIS_HASH, AuditRecord, chain_hash
from broker.errors import StoreUnavailableError
from broker.tokens.keystore import KeyState

T0 = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
SUBJECTS = (SubjectCount("spiffe://example.org/ns/shop/sa/web", 2), SubjectCount("spiffe://example.org/x", 1))


def sample_keys() -> list[KeyInfo]:
    return [
        KeyInfo("k-old", "ES256", KeyState.RETIRING, "kek-1", T0, T0 + timedelta(hours=1), T0 + timedelta(hours=25)),
        KeyInfo("k-live", "ES256", KeyState.ACTIVE, "kek-1", T0 + timedelta(hours=24), T0 + timedelta(hours=25)),
        KeyInfo("k-gone", "ES256", KeyState.REVOKED, "kek-1", T0, retired_at=T0 + timedelta(hours=2)),
    ]


class FakeKeyAdmin:
    """A keyring: rotate moves active -> retiring; revoke refuses an unknown or revoked kid, changing nothing."""

    def __init__(self) -> None:
        self.keys = sample_keys()
        self.rotations = 0
        self.revoked: list[str] = []
        self.gate: asyncio.Event | None = None  # set: revoke waits for it

    async def list_keys(self) -> Sequence[KeyInfo]:
        return list(self.keys)

    async def rotate(self) -> KeyRotation:
        self.rotations += 1
        return KeyRotation(active_kid=f"k-new-{self.rotations}", previous_kid="k-live", next_kid="k-next")

    async def revoke(self, kid: str) -> KeyRevocation:
        found = [k for k in self.keys if k.kid == kid]
        if not found:
            raise KidNotFoundError.for_kid(kid)
        if found[0].state is KeyState.REVOKED:
            raise KidAlreadyRevokedError.for_kid(kid)
        if self.gate is not None:
            await self.gate.wait()
        self.keys = [replace(k, state=KeyState.REVOKED) if k.kid == kid else k for k in self.keys]
        self.revoked.append(kid)
        radius = BlastRadius(
            live_tokens=3,
            subjects=(
                SubjectCount("spiffe://example.org/ns/shop/sa/web", 2),
                SubjectCount("spiffe://example.org/x", 1),
            ),
            audiences=("https://api.example.org",),
            valid_until=T0 + timedelta(minutes=5),
        )
        return KeyRevocation(revoked_kid=kid, active_kid="k-fresh", blast_radius=radius)


class FakeStoreInfo:
    async def status(self) -> StoreStatus:
        return StoreStatus("postgresql", "postgresql://broker:***@db.internal/broker", 2, 2)


def chained(events: Sequence[tuple[str, dict[str, Any]]]) -> list[AuditRecord]:
    """Audit records with a real hash chain (broker.audit.journal)."""
    records, prev = [], GENESIS_HASH
    for seq, (event, body) in enumerate(events, start=1):
        at = T0 + timedelta(seconds=seq)
        raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        digest = chain_hash(prev, seq, at, event, raw)
        records.append(AuditRecord(seq, at, event, raw, prev, digest))
        prev = digest
    return records


class FakeAuditReader:
    def __init__(self, records: Sequence[AuditRecord]) -> None:
        self.records = list(records)
        self.queries: list[AuditQuery] = []

    async def read(self, query: AuditQuery) -> Sequence[AuditRecord]:
        self.queries.append(query)
        hits = [r for r in self.records if r.seq > query.after and (query.event in (None, r.event))]
        if query.spiffe_id is not None:
            hits = [r for r in hits if str(query.spiffe_id).encode() in r.body]
        return hits[: query.limit]


@dataclass(frozen=True)
class Recorded:
    actor: str | None
    method: str
    path: str
    outcome: str
    detail: dict[str, Any]


@dataclass
class RecordingAudit:
    """Records every admin call; ``fail_on`` names outcomes whose record fails as a store outage would."""

    records: list[Recorded] = field(default_factory=list)
    fail_on: frozenset[str] = frozenset()
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def record(self, actor: str | None, method: str, path: str, outcome: str, detail: Mapping[str, Any]) -> None:
        if outcome in self.fail_on:
            raise StoreUnavailableError("postgresql://broker:hunter2@db/broker: connection refused")
        self.records.append(Recorded(actor, method, path, outcome, dict(detail)))
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, outcomes: list[str]) -> None:
        """Until the recorded outcomes are ``outcomes``."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.outcomes() == outcomes)

    def outcomes(self) -> list[str]:
        return [r.outcome for r in self.records]
