"""The issuance ledger's in-memory twin: keyed by ``jti``, a repeated ``jti`` skipped as the SQL stores skip it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from broker.events.revocations import SubjectPattern
from broker.tokens.keystore import check_instant
from broker.tokens.ledger import DEFAULT_TOP, BlastRadius, LedgerEntry, check_limit, ranked

__all__ = ["MemoryLedger"]


class MemoryLedger:
    def __init__(self) -> None:
        self._entries: dict[str, LedgerEntry] = {}

    async def record(self, entries: Sequence[LedgerEntry]) -> None:
        for entry in entries:
            self._entries.setdefault(entry.jti, entry)

    async def blast_radius(self, kid: str, now: datetime, *, top: int = DEFAULT_TOP) -> BlastRadius:
        check_instant(now)
        live = [e for e in self._entries.values() if e.kid == kid and e.expires_at > now]
        subjects = Counter(e.subject for e in live)
        audiences = Counter(a for e in live for a in e.audience)
        return BlastRadius(
            kid=kid,
            live_tokens=len(live),
            subjects=ranked(dict(subjects), top),
            audiences=ranked(dict(audiences), top),
            valid_until=max((e.expires_at for e in live), default=None),
            distinct_subjects=len(subjects),
        )

    async def prune(self, expired_before: datetime) -> int:
        check_instant(expired_before)
        gone = [jti for jti, e in self._entries.items() if e.expires_at < expired_before]
        for jti in gone:
            del self._entries[jti]
        return len(gone)

    async def live_tokens(
        self, pattern: SubjectPattern, now: datetime, *, limit: int | None = None
    ) -> list[tuple[str, datetime]]:
        check_instant(now)
        check_limit(limit)
        live = sorted(
            (e.expires_at, e.jti) for e in self._entries.values() if e.expires_at > now and _matches(pattern, e.subject)
        )
        return [(jti, expires_at) for expires_at, jti in live[:limit]]


def _matches(pattern: SubjectPattern, subject: str) -> bool:
    """As the SQL stores compare: the ID itself, or text that starts with the prefix (no wildcard in it)."""
    return subject.startswith(pattern.key) if pattern.is_prefix else subject == pattern.text
