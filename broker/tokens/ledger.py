"""The issuance ledger: what each issued access token is bound to and how long it lives, never the token itself.

One :class:`LedgerEntry` per token (issue 9, item 4): its ``jti`` (RFC 7519 §4.1.7), the ``kid`` that signed it
(RFC 7515 §4.1.4), the subject SPIFFE ID, audience, scopes, the binding (``x5t#S256=<thumbprint>``, RFC 8705
§3.1), ``iat`` and ``exp``. The server writes entries in batches (:mod:`broker._batch`); ``keys revoke`` reads
the :class:`BlastRadius` of a key from it: how many live tokens the key signed, for whom, until when; ``quarantine
add`` reads the live tokens of a subject pattern (:meth:`IssuanceLedgerStore.live_tokens`, issue 10).

:meth:`IssuanceLedgerStore.record` is one transaction and idempotent on ``jti``: an entry whose ``jti`` is already
recorded is skipped and the first one stands. The batch writer retries a write whose outcome it could not learn
(the commit reached the server, the answer did not); refusing the repeat would jam the ledger on its own retry.
A ``jti`` is 128 random bits, so a repeat from two different tokens does not happen by chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from broker.events.revocations import SubjectPattern
from broker.tokens.keystore import check_instant

__all__ = [
    "DEFAULT_TOP",
    "BlastRadius",
    "IssuanceLedgerStore",
    "LedgerEntry",
    "LedgerRow",
    "check_limit",
    "check_rows",
    "entry_of",
    "ranked",
]

DEFAULT_TOP = 20  # subjects and audiences listed in a blast radius


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    jti: str
    kid: str
    subject: str
    audience: tuple[str, ...]
    scope: tuple[str, ...]
    binding: str
    issued_at: datetime
    expires_at: datetime

    def __post_init__(self) -> None:
        if not self.jti or not self.kid or not self.subject:
            raise ValueError("a ledger entry names its jti, kid and subject")
        check_instant(self.issued_at)
        check_instant(self.expires_at)
        if self.expires_at < self.issued_at:
            raise ValueError("a token cannot expire before it is issued")
        if any(" " in s or not s for s in self.scope):
            raise ValueError("a scope-token is non-empty and has no space (RFC 6749 §3.3)")


LedgerRow = tuple[str, str, str, tuple[str, ...], tuple[str, ...], str, int, int]
"""One entry as the token endpoint's recorder batches it: ``(jti, kid, subject, audience, scope, binding, iat,
exp)``, the times in whole seconds since the epoch (as the token's claims have them). The facts of a
:class:`LedgerEntry`, without two datetimes and a check per token on the hot path: :func:`check_rows` checks a
batch before a store writes any of it."""


def check_rows(rows: Sequence[LedgerRow]) -> None:
    """Refuse (ValueError) a batch with a row :class:`LedgerEntry` would refuse; nothing of it is written then."""
    for jti, kid, subject, _audience, scope, _binding, issued_at, expires_at in rows:
        if not (jti and kid and subject):
            raise ValueError("a ledger entry names its jti, kid and subject")
        if expires_at < issued_at:
            raise ValueError("a token cannot expire before it is issued")
        if scope and (not all(scope) or " " in "".join(scope)):
            raise ValueError("a scope-token is non-empty and has no space (RFC 6749 §3.3)")


def entry_of(row: LedgerRow) -> LedgerEntry:
    """``row`` as a :class:`LedgerEntry` (checked)."""
    jti, kid, subject, audience, scope, binding, issued_at, expires_at = row
    return LedgerEntry(jti, kid, subject, audience, scope, binding, datetime.fromtimestamp(issued_at, UTC),
                       datetime.fromtimestamp(expires_at, UTC))  # fmt: skip


@dataclass(frozen=True, slots=True)
class BlastRadius:
    """The live tokens (``exp`` after ``now``) that ``kid`` signed: how many, for whom, until when.

    ``subjects`` and ``audiences`` are the ``top`` largest, ``(name, live tokens)`` by count, then name;
    ``distinct_subjects`` says how many subjects there are in all. ``valid_until`` is the last ``exp``, or None
    when no live token remains.
    """

    kid: str
    live_tokens: int
    subjects: tuple[tuple[str, int], ...]
    audiences: tuple[tuple[str, int], ...]
    valid_until: datetime | None
    distinct_subjects: int = 0


class IssuanceLedgerStore(Protocol):
    async def record(self, entries: Sequence[LedgerEntry]) -> None:
        """Write ``entries`` in one transaction; an already recorded ``jti`` is skipped (see the module docstring)."""
        ...

    async def blast_radius(self, kid: str, now: datetime, *, top: int = DEFAULT_TOP) -> BlastRadius:
        """What ``kid`` signed that is still valid at ``now``."""
        ...

    async def prune(self, expired_before: datetime) -> int:
        """Delete entries whose ``expires_at`` is before ``expired_before``; how many went."""
        ...

    async def live_tokens(
        self, pattern: SubjectPattern, now: datetime, *, limit: int | None = None
    ) -> list[tuple[str, datetime]]:
        """``(jti, expires_at)`` of the tokens with ``expires_at`` after ``now`` whose subject ``pattern`` matches
        (the ID itself, or every ID under the prefix: compared as text, no wildcard in it), by ``expires_at`` then
        ``jti`` in code point order; at most ``limit`` (None: all). ValueError for a ``limit`` below 1."""
        ...


def ranked(counts: dict[str, int], top: int) -> tuple[tuple[str, int], ...]:
    """The ``top`` largest counts, by count descending, then name."""
    return tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top])


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ValueError("limit is at least 1 (or None: no limit)")
