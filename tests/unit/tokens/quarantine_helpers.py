"""Shared parts of the quarantine tests: an issuance ledger twin that answers ``live_tokens``, and the service.

:class:`LiveLedger` is the memory ledger plus ``live_tokens(pattern, now, *, limit)`` as the store Protocol
declares it (live: ``exp`` after ``now``; the subject matched by the pattern), ordered by ``jti``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from broker.audit.trail import AuditTrail
from broker.errors import StoreUnavailableError
from broker.events.revocations import SubjectPattern
from broker.store.memory import MemoryStore
from broker.store.memory.ledger import MemoryLedger
from broker.testing import ManualClock
from broker.tokens.ledger import LedgerEntry
from broker.tokens.quarantine import Quarantines

START = 1_800_000_000.0
WINDOW = timedelta(seconds=660)  # longest lifetime 600 s + leeway 60 s
WEB = "spiffe://example.org/ns/shop/sa/web"
BATCH = "spiffe://example.org/ns/shop/sa/batch"
OTHER = "spiffe://example.org/ns/billing/sa/api"
ADMIN = "spiffe://example.org/ops/admin"


class LiveLedger(MemoryLedger):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[LedgerEntry] = []
        self.failing = False
        self.asked: list[tuple[str, int | None]] = []  # (pattern, limit) of each live_tokens call

    async def record(self, entries: Sequence[LedgerEntry]) -> None:
        await super().record(entries)
        self.rows.extend(e for e in entries if e.jti not in {r.jti for r in self.rows})

    async def live_tokens(
        self, pattern: SubjectPattern, now: datetime, *, limit: int | None = None
    ) -> list[tuple[str, datetime]]:
        self.asked.append((pattern.text, limit))
        if self.failing:
            raise StoreUnavailableError("sqlite:///var/lib/broker.db: database is locked")
        live = sorted((r.jti, r.expires_at) for r in self.rows if r.expires_at > now and pattern.matches(r.subject))
        return live if limit is None else live[:limit]


def at(clock: ManualClock, offset: float = 0.0) -> datetime:
    return datetime.fromtimestamp(clock() + offset, UTC)


def entry(jti: str, subject: str, issued: datetime, lifetime: float = 300.0, kid: str = "k-1") -> LedgerEntry:
    return LedgerEntry(jti, kid, subject, ("https://api.example.org",), ("read",), "x5t#S256=abc", issued,
                       issued + timedelta(seconds=lifetime))  # fmt: skip


Flush = Callable[[], Awaitable[None]]


def service(
    store: MemoryStore, ledger: LiveLedger, clock: ManualClock, flush_ledger: Flush | None = None
) -> Quarantines:
    trail = AuditTrail(store.audit)
    return Quarantines(store.revocations, ledger, trail, window=lambda: WINDOW, clock=clock, flush_ledger=flush_ledger)
