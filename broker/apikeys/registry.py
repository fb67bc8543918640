"""The registry of governed API-key exceptions: every change an admin makes, checked, stored, withdrawn, audited.

Each change runs in this order, and a refusal at any step before the store write changes nothing:

1. **check** the input: the model and the governance rules (:class:`~broker.apikeys.rules.GovernanceRules`), the
   secret (:func:`~broker.apikeys.sealing.secret_text`), the reason or note;
2. **seal** a new secret for its ``(name, version)`` (:mod:`broker.apikeys.sealing`); ``rotate`` first opens the
   current version (a KEK this replica lacks is :class:`~broker.apikeys.errors.SecretUnavailableError`, nothing
   changed) and refuses a "rotation" to the same secret;
3. **write** through the store's compare-and-set on ``revision`` (:class:`~broker.apikeys.store.ApiKeyStore`): a
   concurrent change by another admin or replica is :class:`~broker.apikeys.errors.ExceptionConflictError`;
4. **withdraw** (``suspend``, ``revoke``, an ``update`` that narrows who may use it or for how long or changes its
   presentation, a ``rotate`` whose grace is shorter than the hold time): append
   :class:`~broker.events.revocations.ExceptionWithdrawn` (``at`` now, after the write, so any grant decided
   before it is covered; kept ``hold_time + leeway``) to the revocation log, so every sidecar drops the secret
   from the feed within its latency instead of at its ``hold_until``;
5. **audit** at once (``record_now``): ``apikey.added|updated|rotated|suspended|resumed|revoked|reviewed``, with
   the admin's SPIFFE ID and the changed fields before and after (:mod:`broker.apikeys.changes`: never the
   secret, never sealed bytes).

``suspend`` and ``revoke`` are idempotent: repeated on an exception already in that state they append the
withdrawal again (the way to finish one whose withdrawal did not reach the log) and record it. ``revoke`` is
final. ``reveal`` opens the current version for an admin; its ``apikey.revealed`` record is written before the
secret is returned, so a journal that refuses it reveals nothing.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from broker._sealing import KekRing
from broker.apikeys.changes import check_note, describe, diff, iso
from broker.apikeys.errors import (
    ExceptionConflictError,
    ExceptionExistsError,
    InvalidExceptionError,
    UnknownExceptionError,
)
from broker.apikeys.model import ApiKeyException, Presentation, SealedVersion, State, UseRecord
from broker.apikeys.report import DEFAULT_UNUSED_DAYS, Report, build_report
from broker.apikeys.rules import GovernanceRules
from broker.apikeys.sealing import open_version, seal_secret, secret_text
from broker.apikeys.store import ApiKeyStore
from broker.audit.apikey_events import (
    ApiKeyAdded,
    ApiKeyResumed,
    ApiKeyRevealed,
    ApiKeyReviewed,
    ApiKeyRevokedRecorded,
    ApiKeyRotated,
    ApiKeySuspended,
    ApiKeyUpdated,
)
from broker.audit.events import AuditEvent
from broker.errors import StoreConflictError
from broker.events.revocations import ExceptionWithdrawn, LogEntry, RevocationEvent, SubjectPattern

__all__ = ["Amendment", "ApiKeyRegistry", "ChangeAudit", "Revealed", "Rotated", "WithdrawalLog"]


class WithdrawalLog(Protocol):
    """Where withdrawals go: the revocation log (:class:`~broker.tokens.revocation.RevocationLogStore`)."""

    async def append(self, events: Sequence[RevocationEvent]) -> Sequence[LogEntry]: ...


class ChangeAudit(Protocol):
    """Where changes are recorded at once (:meth:`~broker.audit.trail.AuditTrail.record_now`)."""

    async def record_now(self, event: AuditEvent) -> object: ...


@dataclass(frozen=True, slots=True)
class Amendment:
    """The metadata an update changes (None: unchanged). The name, target and delivery are not among them: sending
    an existing secret to another host, or to the app, is a new exception with its own review."""

    owner: str | None = None
    contact: str | None = None
    justification: str | None = None
    ticket: str | None = None
    expires_at: datetime | None = None
    review_interval: timedelta | None = None
    allowed: tuple[SubjectPattern, ...] | None = None
    presentation: Presentation | None = None

    def apply(self, record: ApiKeyException) -> ApiKeyException:
        given = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return replace(record, **given)

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


@dataclass(frozen=True, slots=True)
class Rotated:
    """What ``rotate`` did: the record, the new version, and until when the one it replaced stays usable."""

    record: ApiKeyException
    version: int
    superseded: int
    superseded_usable_until: datetime
    withdrawn: bool


@dataclass(frozen=True, slots=True)
class Revealed:
    name: str
    version: int
    secret: str = field(repr=False)


class ApiKeyRegistry:
    """Changes to API-key exceptions by admins (see the module docstring); ``actor`` is the admin's SPIFFE ID."""

    def __init__(
        self,
        store: ApiKeyStore,
        log: WithdrawalLog,
        audit: ChangeAudit,
        keks: KekRing,
        rules: GovernanceRules,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store, self._log, self._audit, self._keks = store, log, audit, keks
        self.rules = rules
        self._clock = clock

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # -- reads --

    async def list_all(self) -> tuple[ApiKeyException, ...]:
        return await self._store.list_all()

    async def get(self, name: str) -> ApiKeyException:
        record = await self._store.get(name)
        if record is None:
            raise UnknownExceptionError.named(name)
        return record

    async def versions(self, name: str) -> tuple[SealedVersion, ...]:
        await self.get(name)
        return await self._store.versions(name)

    async def uses(self, name: str | None = None) -> tuple[UseRecord, ...]:
        return await self._store.uses(name)

    async def report(self, unused_days: int = DEFAULT_UNUSED_DAYS) -> Report:
        """The governance report now (:mod:`broker.apikeys.report`)."""
        return build_report(await self._store.list_all(), await self._store.uses(), self.now(), self.rules, unused_days)

    # -- changes --

    async def add(self, record: ApiKeyException, secret: bytes, actor: str) -> ApiKeyException:
        """Register ``record`` (its state, review and version fields are the registry's) with ``secret`` as v1."""
        now = self.now()
        fresh = replace(record, state=State.ACTIVE, state_reason="", last_review_at=None, last_review_by="",
                        current_version=0, revision=0, created_at=None, updated_at=None)  # fmt: skip
        self.rules.check(fresh, now)
        sealed, kek_id = seal_secret(self._keks, fresh.name, 1, secret_text(secret))
        try:
            stored = await self._store.add(fresh, sealed, kek_id, at=now)
        except StoreConflictError:
            raise ExceptionExistsError(
                f"an exception named {fresh.name!r} exists (names are never reused, revoked ones included)"
            ) from None
        after = {**describe(stored), "kek_id": kek_id}
        await self._audit.record_now(ApiKeyAdded(stored.name, actor, after=after))
        return stored

    async def update(self, name: str, amendment: Amendment, actor: str, reason: str | None = None) -> ApiKeyException:
        """Change metadata (an expiry within the lifetime cap from now); a change that narrows who may use it or
        for how long, or changes how it is presented, withdraws the secret from the sidecars that hold it."""
        reason = None if reason is None else check_note(reason, "reason")
        record = self._changeable(await self.get(name))
        changed = amendment.apply(record)
        if changed == record:
            raise InvalidExceptionError("nothing to change: every field given has its current value")
        now = self.now()
        self.rules.check(changed, now)
        updated = await self._write(changed, now)
        if _narrows(record, updated):
            await self._withdraw(name)
        before, after = diff(record, updated)
        await self._audit.record_now(ApiKeyUpdated(name, actor, before=before, after=after, reason=reason))
        return updated

    async def rotate(self, name: str, secret: bytes, actor: str) -> Rotated:
        """Store ``secret`` as the next version; the one it replaces stays usable for the rotation grace."""
        record = self._changeable(await self.get(name))
        text = secret_text(secret)
        current = await self._version(name, record.current_version)
        if hmac.compare_digest(open_version(self._keks, current).encode(), text.encode()):
            raise InvalidExceptionError("the new secret is the current one: rotate to a new key from the vendor")
        sealed, kek_id = seal_secret(self._keks, name, record.current_version + 1, text)
        now = self.now()
        try:
            updated, added = await self._store.rotate(name, record.revision, sealed, kek_id, at=now)
        except StoreConflictError:
            raise _changed_meanwhile(name) from None
        withdrawn = self.rules.rotation_grace < self.rules.hold_time
        if withdrawn:  # a sidecar would hold the old version past its grace: drop it now
            await self._withdraw(name)
        usable_until = now + self.rules.rotation_grace
        after = {"current_version": added.version, "kek_id": kek_id,
                 "superseded_usable_until": iso(usable_until), "withdrawn": withdrawn}  # fmt: skip
        event = ApiKeyRotated(name, actor, before={"current_version": record.current_version}, after=after)
        await self._audit.record_now(event)
        return Rotated(updated, added.version, record.current_version, usable_until, withdrawn)

    async def suspend(self, name: str, reason: str, actor: str) -> ApiKeyException:
        """Stop every grant now and withdraw the secret from the sidecars; ``resume`` undoes it."""
        return await self._withdrawing(name, State.SUSPENDED, check_note(reason, "reason"), actor)

    async def revoke(self, name: str, reason: str, actor: str) -> ApiKeyException:
        """Suspend for good: no change is accepted afterwards, and the name is never reused."""
        return await self._withdrawing(name, State.REVOKED, check_note(reason, "reason"), actor)

    async def resume(self, name: str, actor: str, reason: str | None = None) -> ApiKeyException:
        reason = None if reason is None else check_note(reason, "reason")
        record = self._changeable(await self.get(name))
        if record.state is not State.SUSPENDED:
            raise ExceptionConflictError(f"exception {name!r} is not suspended: nothing to resume")
        updated = await self._write(replace(record, state=State.ACTIVE, state_reason=""), self.now())
        before, after = diff(record, updated)
        await self._audit.record_now(ApiKeyResumed(name, actor, before=before, after=after, reason=reason))
        return updated

    async def review(self, name: str, actor: str, note: str) -> ApiKeyException:
        """Record that ``actor`` reviewed the exception now: the next review is due a review interval later."""
        note = check_note(note, "note")
        record = self._changeable(await self.get(name))
        now = self.now()
        updated = await self._write(replace(record, last_review_at=now, last_review_by=actor), now)
        before, after = diff(record, updated)
        await self._audit.record_now(ApiKeyReviewed(name, actor, before=before, after=after, reason=note))
        return updated

    async def reveal(self, name: str, actor: str, reason: str) -> Revealed:
        """The current secret in clear, for an admin; recorded (``apikey.revealed``) before it is returned."""
        reason = check_note(reason, "reason")
        record = await self.get(name)
        version = await self._version(name, record.current_version)
        secret = open_version(self._keks, version)
        after = {"version": version.version, "kek_id": version.kek_id, "state": record.state.value}
        await self._audit.record_now(ApiKeyRevealed(name, actor, after=after, reason=reason))
        return Revealed(name, version.version, secret)

    # -- steps --

    async def _withdrawing(self, name: str, state: State, reason: str, actor: str) -> ApiKeyException:
        record = await self.get(name)
        if record.state is State.REVOKED and state is not State.REVOKED:
            raise ExceptionConflictError(f"exception {name!r} is revoked: revocation is final")
        updated = record
        if record.state is not state:
            updated = await self._write(replace(record, state=state, state_reason=reason), self.now())
        entry = await self._withdraw(name)
        before, after = diff(record, updated)
        after["withdrawal_seq"] = entry.seq
        event = ApiKeySuspended if state is State.SUSPENDED else ApiKeyRevokedRecorded
        await self._audit.record_now(event(name, actor, before=before, after=after, reason=reason))
        return updated

    async def _withdraw(self, name: str) -> LogEntry:
        now = self.now()
        entries = await self._log.append([ExceptionWithdrawn(name, at=now, until=self.rules.withdrawal_until(now))])
        return entries[0]

    async def _write(self, record: ApiKeyException, now: datetime) -> ApiKeyException:
        try:
            return await self._store.update(record, at=now)
        except StoreConflictError:
            raise _changed_meanwhile(record.name) from None
        except LookupError:
            raise UnknownExceptionError.named(record.name) from None
        except ValueError as exc:
            raise InvalidExceptionError(str(exc)) from None

    async def _version(self, name: str, number: int) -> SealedVersion:
        for version in await self._store.versions(name):
            if version.version == number:
                return version
        raise ExceptionConflictError(f"version {number} of {name!r} is not stored: read it again")

    @staticmethod
    def _changeable(record: ApiKeyException) -> ApiKeyException:
        if record.state is State.REVOKED:
            raise ExceptionConflictError(f"exception {record.name!r} is revoked: revocation is final")
        return record


def _narrows(before: ApiKeyException, after: ApiKeyException) -> bool:
    return (
        after.expires_at < before.expires_at
        or not set(before.allowed) <= set(after.allowed)
        or after.presentation != before.presentation
    )


def _changed_meanwhile(name: str) -> ExceptionConflictError:
    return ExceptionConflictError(f"exception {name!r} changed meanwhile (or was revoked): read it again and repeat")
