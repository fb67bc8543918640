"""Adapters from the broker's parts to the admin API's ports (:mod:`broker.admin.ports`).

* :class:`KeyringAdmin`: the signing keyring (:class:`~broker.tokens.keyring.Keyring`) as a
  :class:`~broker.admin.ports.KeyAdmin`. The keyring's refusals become the admin API's errors here, at one seam:
  an unknown kid is 404 ``kid_not_found``; a key already out of the JWKS is 409 ``kid_already_revoked``; a
  rotation before the next key has been published for ``jwks_max_age + leeway`` is 409 ``conflict`` with the
  time it becomes allowed. Nothing was changed in any of these cases. Given a :class:`KeyRevocationFeed` (the
  service's :class:`~broker.tokens.quarantine.Quarantines`), a revoke first puts the kid on the revocation feed
  (:class:`~broker.events.revocations.KeyRevoked`, issue 10 item 5), then revokes it in the keyring: followers
  refuse its tokens before their JWKS cache would expire. In that order so that a failure in between errs on the
  closed side: the kid refused on the feed while it still signs (run ``keys revoke`` again), never a key revoked
  that verifiers keep accepting. An unknown or already revoked kid is not published.
* :class:`RegistryClientAdmin`: the client registry (:class:`~broker.tokens.clients.ClientRegistryStore`) as a
  :class:`~broker.admin.ports.ClientAdmin`, for the admin API and the local CLI alike. A registration is checked
  with :func:`~broker.tokens.clients.check_client` first (RFC 7591 §2: ``jwks`` or ``jwks_uri``, never both;
  public keys only), a refusal being ``invalid_client_metadata`` (RFC 7591 §3.2.2); a taken ``client_id`` is 409
  ``client_exists``, an unknown one 404 ``unknown_client``. Each change the store took is then recorded at once
  (``client.registered``, ``client.disabled``, ``client.enabled``, ``client.removed``); the store bumps the
  ``clients`` change topic, which every replica's view follows.
* :class:`StoreStatusInfo`: which store, at which schema version (:class:`~broker.admin.ports.StoreInfo`).
* :class:`TrailAdminAudit`: each admin call as an ``admin.call`` record, written through to the journal before
  the call goes on (:meth:`~broker.audit.trail.AuditTrail.record_now`), so a journal that cannot take it stops
  the call (:class:`~broker.admin.ports.AdminAudit`).
* :class:`JournalAuditReader`: the journal's records, filtered as ``audit tail`` filters them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from broker.admin.errors import (
    AdminConflictError,
    ClientExistsError,
    ClientNotFoundError,
    InvalidClientMetadataError,
    KidAlreadyRevokedError,
    KidNotFoundError,
)
from broker.admin.ports import AuditQuery, BlastRadius, KeyInfo, KeyRevocation, KeyRotation, StoreStatus, SubjectCount
from broker.audit.events import (
    AdminCall,
    AuditEvent,
    ClientDisabled,
    ClientEnabled,
    ClientRegistered,
    ClientRemoved,
    KeyRevoked,
    KeyRotated,
)
from broker.audit.journal import AuditJournalStore, AuditRecord
from broker.audit.query import event_matches, spiffe_ids_in
from broker.audit.trail import AuditTrail
from broker.errors import StoreConflictError
from broker.jose.jwk import jwks_keys
from broker.store import Store, latest_version
from broker.store.url import StoreUrl
from broker.tokens.clients import ClientRegistryStore, RegisteredClient, check_client
from broker.tokens.keyring import LIVE, Keyring, KeyView
from broker.tokens.ledger import BlastRadius as LedgerBlastRadius
from broker.tokens.rotation import KeyNotLiveError, RotationTooEarlyError, UnknownKeyError

__all__ = [
    "JournalAuditReader",
    "KeyRevocationFeed",
    "KeyringAdmin",
    "RegistryClientAdmin",
    "StoreStatusInfo",
    "TrailAdminAudit",
    "blast_radius_view",
    "client_registered",
]

READ_PAGE = 500  # records read per store call while filtering
FLUSH_TIMEOUT = 2.0  # seconds to wait for the ledger rows queued here before a revoke


def blast_radius_view(found: object, error: str | None = None) -> BlastRadius:
    """The ledger's answer (:class:`broker.tokens.ledger.BlastRadius`) as the admin API reports it; without an
    answer, unknown (``live_tokens`` None) with the reason."""
    if not isinstance(found, LedgerBlastRadius):
        return BlastRadius(live_tokens=None, error=error or "the issuance ledger gave no answer")
    return BlastRadius(
        live_tokens=found.live_tokens,
        subjects=tuple(SubjectCount(subject, count) for subject, count in found.subjects),
        audiences=tuple(audience for audience, _ in found.audiences),
        valid_until=found.valid_until,
    )


class KeyRevocationFeed(Protocol):
    async def publish_key_revocation(self, kid: str, *, grace: timedelta = ...) -> object:
        """Append ``KeyRevoked(kid)`` to the revocation log (:class:`~broker.tokens.quarantine.Quarantines`)."""
        ...


class KeyringAdmin:
    """:class:`~broker.admin.ports.KeyAdmin` over a running :class:`Keyring`."""

    def __init__(
        self,
        keyring: Keyring,
        trail: AuditTrail | None = None,
        flush_ledger: Callable[[], Awaitable[None]] | None = None,
        feed: KeyRevocationFeed | None = None,
    ) -> None:
        self._keyring = keyring
        self._trail = trail  # where key.rotated / key.revoked go (the admin.call records name the caller)
        self._flush_ledger = flush_ledger  # this replica's queued ledger rows, written before the blast radius
        self._feed = feed  # where a revoked kid is published (the revocation log), before the keyring revokes it

    async def list_keys(self) -> Sequence[KeyInfo]:
        await self._keyring.reload()
        return [_key_info(view) for view in self._keyring.views()]

    async def rotate(self) -> KeyRotation:
        try:
            rotation = await self._keyring.rotate()
        except RotationTooEarlyError as exc:
            raise AdminConflictError(exc.description) from None
        if self._trail is not None:
            await self._trail.record_now(KeyRotated(activated=rotation.active_kid, retiring=rotation.previous_kid,
                                                    next=rotation.next_kid, reason="manual"))  # fmt: skip
        return KeyRotation(active_kid=rotation.active_kid, previous_kid=rotation.previous_kid,
                           next_kid=rotation.next_kid)  # fmt: skip

    async def revoke(self, kid: str) -> KeyRevocation:
        """Revoke, having first written this replica's queued ledger rows (bounded by :data:`FLUSH_TIMEOUT`), so
        the blast radius counts them; other replicas' rows of the last batch window may still be missing."""
        if self._flush_ledger is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_ledger(), FLUSH_TIMEOUT)
        await self._publish(kid)
        try:
            revocation = await self._keyring.revoke(kid)
        except UnknownKeyError:
            raise KidNotFoundError.for_kid(kid) from None
        except KeyNotLiveError:
            raise KidAlreadyRevokedError.for_kid(kid) from None
        radius = blast_radius_view(revocation.blast_radius, revocation.blast_radius_error)
        if self._trail is not None:
            await self._trail.record_now(
                KeyRevoked(kid=revocation.kid, activated=revocation.active_kid, live_tokens=radius.live_tokens)
            )
        return KeyRevocation(revoked_kid=revocation.kid, active_kid=revocation.active_kid, blast_radius=radius)

    async def _publish(self, kid: str) -> None:
        """``kid`` on the revocation feed if it is a live key (else the keyring's own refusal follows). ``grace``:
        a replica that has not seen the revoke may sign with the key for up to ``max_unconfirmed`` seconds."""
        if self._feed is None:
            return
        await self._keyring.reload()
        if any(view.kid == kid and view.state in LIVE for view in self._keyring.views()):
            await self._feed.publish_key_revocation(kid, grace=timedelta(seconds=self._keyring.max_unconfirmed))


def _key_info(view: KeyView) -> KeyInfo:
    return KeyInfo(
        kid=view.kid,
        algorithm=view.algorithm,
        state=view.state,
        kek_id=view.kek_id,
        created_at=view.created_at,
        activated_at=view.activated_at,
        retiring_at=view.retiring_at,
        retired_at=view.retired_at,
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


def client_registered(client: RegisteredClient, actor: str | None) -> ClientRegistered:
    """The ``client.registered`` record: the inline keys named by ``kid`` and counted, never given."""
    keys = jwks_keys(client.jwks) or []
    kids = tuple(key["kid"] for key in keys if isinstance(key, dict) and isinstance(key.get("kid"), str))
    return ClientRegistered(client_id=client.client_id, spiffe_id=client.spiffe_id, jwks_uri=client.jwks_uri,
                            kids=kids, inline_keys=len(keys), algorithms=client.algorithms,
                            max_assertion_lifetime=client.max_assertion_lifetime, actor=actor)  # fmt: skip


class RegistryClientAdmin:
    """:class:`~broker.admin.ports.ClientAdmin` over a :class:`ClientRegistryStore` (``Store.clients``); changes
    go to ``trail`` once made (None: not recorded, for tests)."""

    def __init__(
        self,
        registry: ClientRegistryStore,
        trail: AuditTrail | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._registry = registry
        self._trail = trail
        self._clock = clock

    async def list_clients(self) -> Sequence[RegisteredClient]:
        return await self._registry.list_all()

    async def get_client(self, client_id: str) -> RegisteredClient:
        client = await self._registry.get(client_id)
        if client is None:
            raise ClientNotFoundError.for_client(client_id)
        return client

    async def add_client(self, client: RegisteredClient, actor: str | None) -> RegisteredClient:
        try:
            added = await self._registry.add(check_client(client), at=self._clock())
        except ValueError as exc:  # check_client's words: they never quote key material
            raise InvalidClientMetadataError(str(exc)) from None
        except StoreConflictError:
            raise ClientExistsError.for_client(client.client_id) from None
        await self._record(client_registered(added, actor))
        return added

    async def set_disabled(self, client_id: str, disabled: bool, actor: str | None) -> RegisteredClient:
        client = await self._registry.set_disabled(client_id, disabled, at=self._clock())
        if client is None:
            raise ClientNotFoundError.for_client(client_id)
        await self._record(ClientDisabled(client_id, actor) if disabled else ClientEnabled(client_id, actor))
        return client

    async def remove_client(self, client_id: str, actor: str | None) -> RegisteredClient:
        client = await self.get_client(client_id)
        if not await self._registry.remove(client_id):
            raise ClientNotFoundError.for_client(client_id)  # removed by another call in between
        await self._record(ClientRemoved(client_id, client.spiffe_id, actor))
        return client

    async def _record(self, event: AuditEvent) -> None:
        if self._trail is not None:
            await self._trail.record_now(event)


class StoreStatusInfo:
    """:class:`~broker.admin.ports.StoreInfo` for an open store; the URL is shown redacted (no password)."""

    def __init__(self, store: Store, url: StoreUrl) -> None:
        self._store = store
        self._url = url

    async def status(self) -> StoreStatus:
        return StoreStatus(
            engine=self._url.kind,
            redacted_url=self._url.redacted(),
            schema_version=await self._store.schema_version(),
            latest_version=latest_version(),
        )


class TrailAdminAudit:
    """:class:`~broker.admin.ports.AdminAudit` on the audit trail: one durable ``admin.call`` record per step."""

    def __init__(self, trail: AuditTrail) -> None:
        self._trail = trail

    async def record(self, actor: str | None, method: str, path: str, outcome: str, detail: Mapping[str, Any]) -> None:
        status = detail.get("status")
        event = AdminCall(actor=actor, method=method, path=path, outcome=outcome,
                          status=status if isinstance(status, int) else None, detail=dict(detail))  # fmt: skip
        await self._trail.record_now(event)


class JournalAuditReader:
    """:class:`~broker.admin.ports.AuditReader` over the journal: ``seq > after``, then the event and SPIFFE ID
    filters, reading pages until ``limit`` records matched or the journal ends."""

    def __init__(self, journal: AuditJournalStore) -> None:
        self._journal = journal

    async def read(self, query: AuditQuery) -> Sequence[AuditRecord]:
        found: list[AuditRecord] = []
        first = query.after + 1
        while len(found) < query.limit:
            page = await self._journal.read(first, READ_PAGE)
            found.extend(record for record in page if _matches(record, query))
            if len(page) < READ_PAGE:
                break
            first = page[-1].seq + 1
        return found[: query.limit]


def _matches(record: AuditRecord, query: AuditQuery) -> bool:
    if query.event is not None and not event_matches(record.event, query.event):
        return False
    return query.spiffe_id is None or str(query.spiffe_id) in spiffe_ids_in(record)
