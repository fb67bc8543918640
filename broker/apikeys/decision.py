"""The grant decision: may this workload have this exception's secret now, and until when?

:meth:`GrantDecider.grant` answers ``POST /v1/apikeys/{name}/grant`` (:mod:`broker.apikeys.grant`) for the caller's
SPIFFE ID (its X.509-SVID, as ``/token`` authenticates it), reading the store afresh (a suspension made a moment
ago on another replica is seen), with the checks in this order, the first that fails deciding:

1. the exception exists: else ``not_found`` (404);
2. the caller matches one of its ``allowed`` SPIFFE IDs or prefixes
   (:class:`~broker.events.revocations.SubjectPattern`): else ``access_denied`` "SPIFFE ID not allowed" (403,
   RFC 6749 §4.1.2.1's code for a denied request);
3. its status (:func:`~broker.apikeys.model.status_at`) is not ``revoked``, ``suspended`` or ``expired``: else 403
   naming the status;
4. its review is not overdue past the grace period (``[apikeys] review_grace_days``): else 403 "review overdue
   since ..."; within the grace it is still granted;
5. the caller is not quarantined (:meth:`~broker.events.revocations.RevocationIndex.quarantine_of`; a view that
   cannot vouch for its freshness fails closed, 503): else 403;
6. the current version opens (:func:`~broker.apikeys.sealing.open_version`; a KEK this replica lacks is 503, so
   the sidecar tries again, perhaps on another replica).

The answer's ``hold_until`` (:func:`hold_until`) is the earliest of now + ``hold_seconds``, the exception's expiry
and, for a version already superseded, its end of rotation grace. Every outcome is audited: ``apikey.granted``
(SPIFFE ID, name, version, hold_until) or ``apikey.refused`` (SPIFFE ID, name, reason code). Both go through the
audit trail's group commit (:meth:`~broker.audit.trail.AuditTrail.record`, as ``token.issued`` does); a trail
that cannot take a grant's record refuses the grant (503): no secret leaves without its record queued.

:meth:`GrantDecider.catalog` lists what the caller may use now (checks 2 to 5, never a secret) for
``GET /v1/apikeys``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from broker._sealing import KekRing
from broker.apikeys.changes import iso
from broker.apikeys.errors import ExceptionNotFoundError, GrantRefusedError, SecretUnavailableError
from broker.apikeys.grant import Catalog, CatalogEntry, Grant
from broker.apikeys.model import ApiKeyException, SealedVersion, Status, review_due, status_at
from broker.apikeys.rules import GovernanceRules
from broker.apikeys.sealing import open_version
from broker.apikeys.store import ApiKeyStore
from broker.audit.apikey_events import ApiKeyGranted, ApiKeyRefused
from broker.audit.events import AuditEvent
from broker.errors import BrokerError, TemporarilyUnavailableError

__all__ = ["GrantAudit", "GrantDecider", "QuarantineView", "hold_until"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_WITHDRAWN = {Status.REVOKED: "revoked", Status.SUSPENDED: "suspended", Status.EXPIRED: "expired"}


class QuarantineView(Protocol):
    """The quarantines in force (a :class:`~broker.events.revocations.RevocationIndex`, or a view of one that raises
    :class:`~broker.errors.TemporarilyUnavailableError` when it cannot vouch for its freshness)."""

    def quarantine_of(self, subject: str, now: datetime) -> object | None: ...


class GrantAudit(Protocol):
    """Where grants and refusals are queued (:meth:`~broker.audit.trail.AuditTrail.record`); False: no room."""

    def record(self, event: AuditEvent) -> bool: ...


def hold_until(now: datetime, record: ApiKeyException, version: SealedVersion, rules: GovernanceRules) -> datetime:
    """The earliest of now + hold time, the exception's expiry, and a superseded version's end of grace."""
    until = min(now + rules.hold_time, record.expires_at)
    if version.superseded_at is not None:
        until = min(until, version.superseded_at + rules.rotation_grace)
    return until


class GrantDecider:
    """Grants and catalogs for callers (see the module docstring)."""

    def __init__(
        self,
        store: ApiKeyStore,
        keks: KekRing,
        rules: GovernanceRules,
        quarantine: QuarantineView,
        audit: GrantAudit,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store, self._keks, self._rules = store, keks, rules
        self._quarantine, self._audit, self._clock = quarantine, audit, clock

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def grant(self, spiffe_id: str, name: str) -> Grant:
        """The current version's secret for ``spiffe_id``, or the refusal (audited either way)."""
        now = self.now()
        shown = name if _NAME.fullmatch(name) else ""  # a name that is no exception's is not copied to the journal
        try:
            if not shown:
                raise ExceptionNotFoundError()
            granted = await self._grant(spiffe_id, name, now)
        except GrantRefusedError as exc:
            self._refused(spiffe_id, shown, exc.reason)
            raise
        except ExceptionNotFoundError:
            self._refused(spiffe_id, shown, "not_found")
            raise
        except BrokerError:
            self._refused(spiffe_id, shown, "unavailable")
            raise
        event = ApiKeyGranted(spiffe_id, name, granted.version, int(granted.hold_until.timestamp()))
        if not self._audit.record(event):
            log.error("apikey grant of %s to %s refused: the audit trail is full", name, spiffe_id)
            raise TemporarilyUnavailableError("the audit journal cannot take the grant's record now: try again")
        return granted

    async def catalog(self, spiffe_id: str) -> Catalog:
        """The exceptions ``spiffe_id`` may use now (403 when it is quarantined)."""
        now = self.now()
        self._check_quarantine(spiffe_id, now)
        usable = [r for r in await self._store.list_all() if r.allows(spiffe_id) and self._refusal(r, now) is None]
        return Catalog(tuple(CatalogEntry(r.name, r.target, r.presentation, r.delivery) for r in usable))

    async def _grant(self, spiffe_id: str, name: str, now: datetime) -> Grant:
        record = await self._store.get(name)
        if record is None:
            raise ExceptionNotFoundError()
        if not record.allows(spiffe_id):
            raise GrantRefusedError("not_allowed", "SPIFFE ID not allowed to use this exception")
        refusal = self._refusal(record, now)
        if refusal is not None:
            raise refusal
        self._check_quarantine(spiffe_id, now)
        version = await self._current(record)
        until = hold_until(now, record, version, self._rules)
        if until <= now:
            raise TemporarilyUnavailableError("the exception's secret was rotated meanwhile: ask again")
        try:
            secret = open_version(self._keks, version)
        except SecretUnavailableError as exc:
            log.error("apikey %s: %s", name, exc.description)
            raise TemporarilyUnavailableError("the secret cannot be opened on this replica: try again") from None
        return Grant(name, version.version, secret, record.target, record.presentation, record.delivery, now, until)

    def _refusal(self, record: ApiKeyException, now: datetime) -> GrantRefusedError | None:
        status = status_at(record, now)
        if status in _WITHDRAWN:
            return GrantRefusedError(_WITHDRAWN[status], f"the exception is {status.value}")
        if status is Status.REVIEW_OVERDUE and self._rules.review_refused(due := review_due(record), now):
            return GrantRefusedError("review_overdue", f"review overdue since {iso(due)}")
        return None

    def _check_quarantine(self, spiffe_id: str, now: datetime) -> None:
        if self._quarantine.quarantine_of(spiffe_id, now) is not None:
            raise GrantRefusedError("quarantined", "this client's SPIFFE ID is quarantined")

    async def _current(self, record: ApiKeyException) -> SealedVersion:
        for version in await self._store.versions(record.name):
            if version.version == record.current_version:
                return version
        raise TemporarilyUnavailableError("the exception's secret was rotated meanwhile: ask again")

    def _refused(self, spiffe_id: str, name: str, reason: str) -> None:
        log.info("apikey grant of %s to %s refused: %s", name or "-", spiffe_id, reason)
        if not self._audit.record(ApiKeyRefused(spiffe_id, name, reason)):
            log.error("apikey refusal of %s to %s not recorded: the audit trail is full", name or "-", spiffe_id)
