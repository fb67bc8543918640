"""What the admin API needs from the rest of the broker: one small Protocol per concern, plain results.

The admin API is framework glue only. The keyring, the store, the audit journal and its reader implement these
Protocols (through thin adapters wired by the server); tests pass fakes. Nothing here carries key material: a
:class:`KeyInfo` has no field that could hold a private or even a public key.

* :class:`KeyAdmin`: list, rotate, revoke (issue 9 item 3; the blast radius comes from the issuance ledger, item 4).
  ``revoke`` raises :class:`~broker.admin.errors.KidNotFoundError` or
  :class:`~broker.admin.errors.KidAlreadyRevokedError`, having changed nothing.
* :class:`QuarantineAdmin`: quarantine add, release, list (issue 10 item 4), implemented by
  :class:`~broker.tokens.quarantine.Quarantines`, whose results (:class:`~broker.tokens.quarantine.Quarantined`,
  :class:`~broker.tokens.quarantine.Released`) it returns as they are.
* :class:`ClientAdmin`: the client registry (issue 11 item 1): list, show, add, disable, enable, remove, over a
  :class:`~broker.tokens.clients.ClientRegistryStore`; its results are
  :class:`~broker.tokens.clients.RegisteredClient` as they are (public keys only: the registry refuses others).
* :class:`ApiKeyAdmin`: governed API-key exceptions (issue 12): list, show, add, update, rotate, suspend, resume,
  revoke, review, reveal, report; implemented by :class:`~broker.apikeys.registry.ApiKeyRegistry`, which checks,
  withdraws and audits each change itself (``apikey.*`` records naming the admin) and raises the refusals of
  :mod:`broker.apikeys.errors`, having changed nothing.
* :class:`DriftView`: the clock drift of the clients this replica has seen (issue 11 item 4), worst first; a
  :class:`~broker.tokens.drift.DriftTracker` as it is. In memory, per replica: each replica reports only what
  reached it since it started.
* :class:`StoreInfo`: which store, at which schema version.
* :class:`AuditReader`: records of the audit journal (:class:`~broker.audit.journal.AuditRecord`), filtered.
* :class:`AdminAudit`: where every admin call is recorded (:class:`Outcome` says how far it got).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from broker.apikeys.model import ApiKeyException, SealedVersion
from broker.apikeys.registry import Amendment, Revealed, Rotated
from broker.apikeys.report import Report
from broker.apikeys.rules import GovernanceRules
from broker.audit.journal import AuditRecord
from broker.events.revocations import SubjectPattern, SubjectQuarantined
from broker.identity.spiffeid import SpiffeId
from broker.tokens.clients import RegisteredClient
from broker.tokens.drift import DriftReport
from broker.tokens.keystore import KeyState
from broker.tokens.quarantine import Quarantined, Released

__all__ = [
    "AdminAudit",
    "ApiKeyAdmin",
    "AuditQuery",
    "AuditReader",
    "BlastRadius",
    "ClientAdmin",
    "DriftView",
    "KeyAdmin",
    "KeyInfo",
    "KeyRevocation",
    "KeyRotation",
    "Outcome",
    "QuarantineAdmin",
    "StoreInfo",
    "StoreStatus",
    "SubjectCount",
]


class Outcome(enum.StrEnum):
    """How far an admin call got, as recorded by :class:`AdminAudit` (the order is in :mod:`broker.admin.gate`)."""

    REFUSED = "refused"  # not authenticated, not an admin, bad input, or the operation refused: nothing done
    SERVED = "served"  # a read was answered
    REQUESTED = "requested"  # a change is about to be made (the intent, written before it)
    DONE = "done"  # the change was made
    FAILED = "failed"  # the operation failed unexpectedly; whether it changed anything is unknown


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One signing key as an operator sees it: identity, state, timestamps, and the KEK that wraps it."""

    kid: str
    algorithm: str
    state: KeyState
    kek_id: str
    created_at: datetime
    activated_at: datetime | None = None
    retiring_at: datetime | None = None
    retired_at: datetime | None = None  # retired or revoked


@dataclass(frozen=True, slots=True)
class KeyRotation:
    """What one rotation moved: the key now signing, the one that stopped, the new ``next``, those retired."""

    active_kid: str
    previous_kid: str | None = None
    next_kid: str | None = None
    retired_kids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SubjectCount:
    spiffe_id: str
    tokens: int


@dataclass(frozen=True, slots=True)
class BlastRadius:
    """Tokens signed by a key that are still live: how many, for whom, for which audiences, valid until when.

    From the issuance ledger, which may lack up to one batch window of the newest tokens (docs/operations.md).
    """

    live_tokens: int | None  # None: the ledger did not answer, the blast radius is unknown (never "zero")
    subjects: tuple[SubjectCount, ...] = ()
    audiences: tuple[str, ...] = ()
    valid_until: datetime | None = None  # the latest ``exp`` among them; None when there are none
    error: str | None = None  # why the ledger could not be read (``live_tokens`` is None then)


@dataclass(frozen=True, slots=True)
class KeyRevocation:
    revoked_kid: str
    active_kid: str
    blast_radius: BlastRadius


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """``redacted_url`` must never hold a password (``StoreUrl.redacted()``)."""

    engine: str
    redacted_url: str
    schema_version: int
    latest_version: int


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Records with ``seq > after``, oldest first, at most ``limit``; optionally one event name or one subject."""

    after: int = 0
    limit: int = 100
    event: str | None = None
    spiffe_id: SpiffeId | None = None


class KeyAdmin(Protocol):
    async def list_keys(self) -> Sequence[KeyInfo]:
        """Every key the keyring holds, oldest first."""
        ...

    async def rotate(self) -> KeyRotation:
        """Rotate now (the same move as a scheduled rotation)."""
        ...

    async def revoke(self, kid: str) -> KeyRevocation:
        """Stop signing with ``kid`` everywhere, drop it from the JWKS, make a fresh key active.

        Raises :class:`~broker.admin.errors.KidNotFoundError` or :class:`~broker.admin.errors.KidAlreadyRevokedError`
        (nothing changed)."""
        ...


class QuarantineAdmin(Protocol):
    def now(self) -> datetime:
        """The service's clock (a relative ``until`` counts from it)."""
        ...

    async def add(self, pattern: SubjectPattern, reason: str, until: datetime | None, actor: str | None) -> Quarantined:
        """Quarantine ``pattern`` (input errors: :mod:`broker.tokens.quarantine`'s classes, nothing changed)."""
        ...

    async def release(self, pattern: SubjectPattern, actor: str | None) -> Released:
        """End the quarantine of exactly ``pattern``; :class:`~broker.tokens.quarantine.NotQuarantinedError`."""
        ...

    async def in_force(self, now: datetime | None = None) -> list[SubjectQuarantined]:
        """The quarantines in force, by pattern."""
        ...


class ClientAdmin(Protocol):
    """The client registry as the admin API changes it; each change is recorded in the audit journal by the
    implementation (``client.registered`` ...), naming ``actor`` (the admin's SPIFFE ID; None for the local CLI)."""

    async def list_clients(self) -> Sequence[RegisteredClient]:
        """Every registered client, ordered by ``client_id``."""
        ...

    async def get_client(self, client_id: str) -> RegisteredClient:
        """The client; :class:`~broker.admin.errors.ClientNotFoundError`."""
        ...

    async def add_client(self, client: RegisteredClient, actor: str | None) -> RegisteredClient:
        """Register ``client`` (as stored, with its timestamps). Refusals change nothing:
        :class:`~broker.admin.errors.InvalidClientMetadataError` (RFC 7591 §3.2.2),
        :class:`~broker.admin.errors.ClientExistsError`."""
        ...

    async def set_disabled(self, client_id: str, disabled: bool, actor: str | None) -> RegisteredClient:
        """Disable or re-enable (idempotent); the client as it is now; :class:`ClientNotFoundError`."""
        ...

    async def remove_client(self, client_id: str, actor: str | None) -> RegisteredClient:
        """Forget the client; what it was; :class:`~broker.admin.errors.ClientNotFoundError`."""
        ...


class ApiKeyAdmin(Protocol):
    """Governed API-key exceptions as the admin API reads and changes them; ``actor`` is the admin's SPIFFE ID."""

    @property
    def rules(self) -> GovernanceRules: ...

    def now(self) -> datetime: ...

    async def list_all(self) -> tuple[ApiKeyException, ...]: ...

    async def get(self, name: str) -> ApiKeyException: ...

    async def versions(self, name: str) -> tuple[SealedVersion, ...]: ...

    async def add(self, record: ApiKeyException, secret: bytes, actor: str) -> ApiKeyException: ...

    async def update(
        self, name: str, amendment: Amendment, actor: str, reason: str | None = None
    ) -> ApiKeyException: ...

    async def rotate(self, name: str, secret: bytes, actor: str) -> Rotated: ...

    async def suspend(self, name: str, reason: str, actor: str) -> ApiKeyException: ...

    async def resume(self, name: str, actor: str, reason: str | None = None) -> ApiKeyException: ...

    async def revoke(self, name: str, reason: str, actor: str) -> ApiKeyException: ...

    async def review(self, name: str, actor: str, note: str) -> ApiKeyException: ...

    async def reveal(self, name: str, actor: str, reason: str) -> Revealed: ...

    async def report(self, unused_days: int = ...) -> Report: ...


class DriftView(Protocol):
    """How far clients' clocks are from this replica's, from the ``iat`` of the assertions and DPoP proofs it
    verified (in memory: this replica only, since it started)."""

    @property
    def leeway(self) -> float:
        """The seconds of skew the checks allow; a median drift beyond half of it is logged once per client."""
        ...

    def worst(self, limit: int = 10) -> Sequence[DriftReport]:
        """The ``limit`` (client, source) pairs whose median drift is largest in magnitude, worst first."""
        ...


class StoreInfo(Protocol):
    async def status(self) -> StoreStatus: ...


class AuditReader(Protocol):
    async def read(self, query: AuditQuery) -> Sequence[AuditRecord]:
        """The journal's records that match ``query``, in ``seq`` order."""
        ...


class AdminAudit(Protocol):
    async def record(self, actor: str | None, method: str, path: str, outcome: str, detail: Mapping[str, Any]) -> None:
        """Append one durable record of an admin call; raise if it was not recorded.

        ``actor`` is the caller's verified SPIFFE ID (None before one is known), ``path`` the route template
        (``/admin/v1/keys/{kid}/revoke``, never the raw request path), ``outcome`` an :class:`Outcome`; ``detail``
        holds JSON values only, never a secret."""
        ...
