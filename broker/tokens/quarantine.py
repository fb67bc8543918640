"""Quarantine: cut a SPIFFE ID, or every ID under a path, off in one step (issue 10 item 4), and publish a revoked
signing key on the revocation feed (item 5). The admin side: what ``spiffe-broker quarantine add|release|list``
and ``keys revoke`` write to the revocation log (:mod:`broker.events.revocations`); the token service, verifiers
and sidecars read it (their :class:`~broker.events.revocations.RevocationIndex`).

:meth:`Quarantines.add`, in this order:

1. checks the input (:func:`parse_pattern`, :func:`check_reason`, the ``until`` in the future): a refusal
   changes nothing;
2. writes this replica's queued issuance-ledger rows (bounded by :data:`FLUSH_TIMEOUT`), so the ledger knows the
   tokens issued here up to now;
3. reads the live tokens (``exp`` after now) of matching subjects from the ledger, at most
   :data:`MAX_REVOKED_TOKENS`;
4. appends, in one transaction (:meth:`~broker.tokens.revocation.RevocationLogStore.append`),
   :class:`~broker.events.revocations.SubjectQuarantined` (``at`` now, ``cutoff_until`` = now + the longest token
   lifetime policy allows + leeway) and one :class:`~broker.events.revocations.TokenRevoked` per live token;
5. records ``subject.quarantined`` (:class:`~broker.audit.events.SubjectQuarantinedRecorded`) with the count.

The quarantine's cutoff is what refuses the live tokens everywhere (it covers every token of a matching subject
issued at or before ``at``, the rows other replicas have not flushed yet included); the ``TokenRevoked`` entries
name them one by one, for introspection and for followers that look a ``jti`` up. Beyond
:data:`MAX_REVOKED_TOKENS` (a whole trust domain) only the cutoff refuses the rest, and the result says so
(``truncated``). An issuance ledger that does not answer does not stop the quarantine: it is appended without
``TokenRevoked`` entries and its count is unknown (``live_tokens`` None, ``ledger_error`` says why). Quarantining
a pattern that is already quarantined replaces its reason, keeps the later of the two ends (none is latest: a
second add never shortens a quarantine), adds a cutoff at now, and reports the quarantine then in force.

:meth:`Quarantines.release` appends :class:`~broker.events.revocations.SubjectReleased` only when a quarantine of
exactly that pattern is in force (else :class:`NotQuarantinedError`); the tokens it revoked stay revoked until its
``cutoff_until``. :meth:`Quarantines.in_force` lists the quarantines in force, from the log's snapshot.

:meth:`Quarantines.publish_key_revocation` appends :class:`~broker.events.revocations.KeyRevoked`, kept until the
later of the latest ``exp`` the ledger knows for the kid and now + longest lifetime + leeway + ``grace`` (how long
a replica that has not seen the revoke may still sign with the key).

Refusals (each changes nothing; the admin API sends its code with status 400 or 404)::

    InvalidRequestError           invalid_request
    ├── InvalidPatternError       invalid_pattern       not a SPIFFE ID, nor spiffe://td/path/*
    │   └── WholeTrustDomainError whole_trust_domain    spiffe://td/* without all_of_trust_domain
    ├── InvalidReasonError        invalid_reason        empty, longer than MAX_REASON, control characters
    └── InvalidUntilError         invalid_until         not RFC 3339 or a duration, not in the future
    OAuthError
    └── NotQuarantinedError       not_quarantined  404  release of a pattern with no quarantine in force
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from broker.audit.events import AuditEvent, SubjectQuarantinedRecorded, SubjectReleasedRecorded
from broker.errors import BrokerError, InvalidRequestError, OAuthError
from broker.events.revocations import (
    KeyRevoked,
    RevocationIndex,
    SubjectPattern,
    SubjectQuarantined,
    SubjectReleased,
    TokenRevoked,
)
from broker.identity.errors import InvalidSpiffeIdError
from broker.identity.spiffeid import SpiffeId
from broker.oauth.response import public_error
from broker.tokens.revocation import RevocationLogStore

__all__ = [
    "FLUSH_TIMEOUT",
    "MAX_REASON",
    "MAX_REVOKED_TOKENS",
    "MAX_UNTIL",
    "InvalidPatternError",
    "InvalidReasonError",
    "InvalidUntilError",
    "NotQuarantinedError",
    "Quarantined",
    "Quarantines",
    "Released",
    "WholeTrustDomainError",
    "check_reason",
    "parse_pattern",
    "parse_until",
]

log = logging.getLogger(__name__)

MAX_REASON = 200  # characters, as the admin API's other reasons
MAX_REVOKED_TOKENS = 10_000  # TokenRevoked entries one quarantine appends; the cutoff refuses the rest
MAX_UNTIL = timedelta(days=3650)  # the furthest --until; without one, a quarantine holds until released
FLUSH_TIMEOUT = 2.0  # seconds to wait for this replica's queued ledger rows
PATTERN_FORMS = "a SPIFFE ID (spiffe://trust-domain/path) or every ID under a path (spiffe://trust-domain/path/*)"

_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)")
_DURATION = re.compile(r"([1-9]\d{0,7})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class InvalidPatternError(InvalidRequestError):
    error = "invalid_pattern"


class WholeTrustDomainError(InvalidPatternError):
    error = "whole_trust_domain"


class InvalidReasonError(InvalidRequestError):
    error = "invalid_reason"


class InvalidUntilError(InvalidRequestError):
    error = "invalid_until"


class NotQuarantinedError(OAuthError):
    """No quarantine of exactly this pattern is in force (RFC 9110 §15.5.5: the target resource does not exist)."""

    error = "not_quarantined"
    status = 404


def parse_pattern(value: str, *, all_of_trust_domain: bool = False) -> SubjectPattern:
    """``value`` as a :class:`SubjectPattern`, exactly as written; never quotes it back (it may be anything)."""
    base = value.removesuffix("/*")
    try:
        SpiffeId.parse(base)
    except InvalidSpiffeIdError as exc:
        raise InvalidPatternError(f"the pattern is not {PATTERN_FORMS}: {exc.description}") from None
    if base.count("/") == 2:  # spiffe://td or spiffe://td/*
        if base == value:
            raise InvalidPatternError(
                "the pattern names a trust domain, not a workload: for every ID of it, use spiffe://trust-domain/* "
                "with all_of_trust_domain (--all-of-trust-domain)"
            )
        if not all_of_trust_domain:
            raise WholeTrustDomainError(
                "the pattern matches every SPIFFE ID of its trust domain: pass all_of_trust_domain "
                "(--all-of-trust-domain) if that is meant; nothing was changed"
            )
    pattern = SubjectPattern.parse(value, all_of_trust_domain=all_of_trust_domain)
    if pattern.text != value:  # cannot happen for a valid base; refuse rather than quarantine something else
        raise InvalidPatternError(f"the pattern is not {PATTERN_FORMS}")
    return pattern


def check_reason(reason: str) -> str:
    """A reason: 1 to :data:`MAX_REASON` printable characters, not only spaces (it is shown in terminals)."""
    if not reason.strip() or len(reason) > MAX_REASON or not reason.isprintable():
        raise InvalidReasonError(
            f"reason must be 1 to {MAX_REASON} printable characters (no control characters, not only spaces)"
        )
    return reason


def parse_until(text: str, now: datetime) -> datetime:
    """An RFC 3339 date-time with its offset (§5.6), or a duration from ``now`` (``90s``, ``30m``, ``2h``, ``7d``);
    it must lie after ``now`` and at most :data:`MAX_UNTIL` ahead."""
    if duration := _DURATION.fullmatch(text):
        ahead = timedelta(seconds=int(duration[1]) * _UNITS[duration[2]])
        until = now + min(ahead, MAX_UNTIL + timedelta(seconds=1))  # a longer one is refused below, not overflowed
    elif _RFC3339.fullmatch(text):
        try:
            until = datetime.fromisoformat(text.upper().replace("Z", "+00:00")).astimezone(UTC)
        except (ValueError, OverflowError):  # OverflowError: its UTC time is outside years 1-9999
            raise InvalidUntilError("until is not a valid RFC 3339 date-time") from None
    else:
        raise InvalidUntilError(
            "until must be an RFC 3339 time with its offset (2030-01-02T03:04:05Z) or a duration (90s, 30m, 2h, 7d)"
        )
    check_until(until, now)
    return until


def check_until(until: datetime | None, now: datetime) -> None:
    if until is None:
        return
    if until <= now:
        raise InvalidUntilError(f"until {_iso(until)} is not in the future (now {_iso(now)}); nothing was changed")
    if until - now > MAX_UNTIL:
        raise InvalidUntilError(
            f"until is more than {MAX_UNTIL.days} days ahead: leave it out for a quarantine until released"
        )


class TokenLedger(Protocol):
    """What quarantine reads from the issuance ledger (:class:`~broker.tokens.ledger.IssuanceLedgerStore`)."""

    async def live_tokens(
        self, pattern: SubjectPattern, now: datetime, *, limit: int | None = None
    ) -> list[tuple[str, datetime]]: ...

    async def blast_radius(self, kid: str, now: datetime) -> object: ...


class AuditSink(Protocol):
    """Where the changes are recorded at once (:meth:`~broker.audit.trail.AuditTrail.record_now`)."""

    async def record_now(self, event: AuditEvent) -> object: ...


@dataclass(frozen=True, slots=True)
class Quarantined:
    """What :meth:`Quarantines.add` appended: the quarantine, and how many live tokens it revoked by ``jti``
    (None: the ledger did not answer, ``ledger_error`` says why; the cutoff refuses them all the same)."""

    quarantine: SubjectQuarantined
    seq: int
    live_tokens: int | None
    truncated: bool = False
    ledger_error: str | None = None


@dataclass(frozen=True, slots=True)
class Released:
    """The quarantine that ended, when, and its log entry; tokens it revoked stay so until its ``cutoff_until``."""

    quarantine: SubjectQuarantined
    at: datetime
    seq: int


class Quarantines:
    """Quarantine add, release and list over the revocation log; see the module docstring.

    ``window()`` is how long a cutoff holds, read at each call: the longest lifetime any policy may allow plus
    leeway (the service and the local CLI both pass that; a current policy may have been shortened since a token
    was issued); ``flush_ledger`` writes this replica's queued ledger rows (None: nothing is queued here).
    """

    def __init__(
        self,
        log: RevocationLogStore,
        ledger: TokenLedger,
        audit: AuditSink,
        *,
        window: Callable[[], timedelta],
        clock: Callable[[], float],
        flush_ledger: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._log, self._ledger, self._audit = log, ledger, audit
        self._window, self._clock, self._flush_ledger = window, clock, flush_ledger

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def add(self, pattern: SubjectPattern, reason: str, until: datetime | None, actor: str | None) -> Quarantined:
        """Quarantine ``pattern`` now; see the module docstring for the steps."""
        check_reason(reason)
        check_until(until, self.now())
        await self._flush()
        now = self.now()
        check_until(until, now)
        event = SubjectQuarantined(pattern, at=now, until=until, cutoff_until=now + self._window(), reason=reason)
        revoked, truncated, error = await self._live_tokens(pattern, now)
        entries = await self._log.append([event, *revoked])
        # A quarantine of the pattern that ends later stays in force (a second add never shortens one): report
        # what is in force now, as every replica and follower sees it.
        event = next((q for q in await self.in_force(now) if q.pattern == pattern), event)
        count = None if error is not None else len(revoked)
        recorded = SubjectQuarantinedRecorded(
            pattern.text, reason, _seconds(event.until), live_tokens=count, actor=actor
        )
        await self._audit.record_now(recorded)
        log.warning("quarantined %s (%s live tokens revoked) by %s", pattern, "?" if count is None else count,
                    actor or "the local CLI")  # fmt: skip
        return Quarantined(event, entries[0].seq, count, truncated, error)

    async def release(self, pattern: SubjectPattern, actor: str | None) -> Released:
        """End the quarantine of exactly ``pattern``; :class:`NotQuarantinedError` if none is in force."""
        now = self.now()
        found = next((q for q in await self.in_force(now) if q.pattern == pattern), None)
        if found is None:
            raise NotQuarantinedError(
                f"no quarantine of {pattern} is in force (released, expired, or never added): "
                "'spiffe-broker quarantine list' shows those in force; nothing was changed"
            )
        entries = await self._log.append([SubjectReleased(pattern, at=now)])
        await self._audit.record_now(SubjectReleasedRecorded(pattern=pattern.text, actor=actor))
        log.warning("released the quarantine of %s by %s", pattern, actor or "the local CLI")
        return Released(found, now, entries[0].seq)

    async def in_force(self, now: datetime | None = None) -> list[SubjectQuarantined]:
        """The quarantines in force at ``now`` (default: the clock's), by pattern."""
        now = now or self.now()
        page = await self._log.snapshot(now)
        index = RevocationIndex()
        index.reset(page.entries, page.head)
        return index.quarantines(now)

    async def publish_key_revocation(self, kid: str, *, grace: timedelta = timedelta(0)) -> KeyRevoked:
        """Append :class:`KeyRevoked` for ``kid``, kept until no token it signed can be valid (module docstring)."""
        now = self.now()
        expires_at = now + self._window() + grace
        try:
            radius = await self._ledger.blast_radius(kid, now)
        except BrokerError as exc:
            log.warning("keys revoke %s: the ledger did not answer (%s); publishing it until %s", kid, exc.error,
                        _iso(expires_at))  # fmt: skip
            radius = None
        valid_until = getattr(radius, "valid_until", None)
        if isinstance(valid_until, datetime) and valid_until > expires_at:
            expires_at = valid_until
        event = KeyRevoked(kid, expires_at)
        await self._log.append([event])
        return event

    async def _flush(self) -> None:
        if self._flush_ledger is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_ledger(), FLUSH_TIMEOUT)

    async def _live_tokens(self, pattern: SubjectPattern, now: datetime) -> tuple[list[TokenRevoked], bool, str | None]:
        try:
            live = await self._ledger.live_tokens(pattern, now, limit=MAX_REVOKED_TOKENS + 1)
        except BrokerError as exc:
            log.error("quarantine of %s: the issuance ledger did not answer (%s): the cutoff alone refuses its live "
                      "tokens", pattern, exc.detail or exc.error)  # fmt: skip
            return [], False, public_error(exc).description or exc.error  # never a store's internal detail
        revoked = _token_entries(live[:MAX_REVOKED_TOKENS])
        return revoked, len(live) > MAX_REVOKED_TOKENS, None


def _token_entries(live: Sequence[tuple[str, datetime]]) -> list[TokenRevoked]:
    revoked: list[TokenRevoked] = []
    for jti, expires_at in live:
        try:
            revoked.append(TokenRevoked(jti, expires_at))
        except ValueError:  # not a jti this broker issues; the cutoff still refuses its token
            log.warning("quarantine: skipped a ledger row whose jti is not 1-256 visible ASCII characters")
    return revoked


def _seconds(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
