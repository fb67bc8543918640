"""The signing keyring: every replica signs with the store's one active key and serves the same JWKS.

:class:`Keyring` is the server's :class:`~broker.tokens.keys.KeyStore`: ``active_key()`` and ``published_keys()``
(``next`` + ``active`` + ``retiring``, never ``retired`` or ``revoked``) read an in-memory snapshot that
:meth:`Keyring.reload` swaps in one assignment. Every change goes through the store as one compare-and-set
:class:`~broker.tokens.keystore.KeyringChange`, so of replicas that act at once exactly one wins and the others
reload (the server calls :meth:`Keyring.reload` on every keyring change event). The schedule and the overlap rule
are in :mod:`broker.tokens.rotation`.

Private keys are stored only sealed (:mod:`broker._sealing`: AES-256-GCM, a data key per key, wrapped by the KEK).
The associated data binds the record format version, the ``kid`` and the algorithm (:func:`key_aad`): a wrapped key
copied to another row does not open. After unsealing, the key's RFC 7638 thumbprint must equal its ``kid``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from broker._sealing import KekRing
from broker.errors import BrokerError, SealingError, StoreConflictError, TemporarilyUnavailableError
from broker.tokens.keys import SigningKey, import_legacy_keys
from broker.tokens.keystore import KeyMove, KeyRecord, KeyringChange, KeyringStore, KeyState
from broker.tokens.rotation import (
    RotationSchedule,
    RotationTooEarlyError,
    in_state,
    plan_retirements,
    plan_revocation,
    plan_rotation,
)
from broker.tokens.sealed_keys import key_aad, seal_key, unseal_key

__all__ = [
    "BlastRadiusSource",
    "KekRotation",
    "KeyView",
    "Keyring",
    "Revocation",
    "Rotation",
    "TickResult",
    "key_aad",
    "rotate_kek",
]

log = logging.getLogger(__name__)

LIVE = (KeyState.NEXT, KeyState.ACTIVE, KeyState.RETIRING)
REVOKE_ATTEMPTS = 5
DEFAULT_MAX_UNCONFIRMED = 60.0  # seconds a replica signs without confirming its keyring against the store
_IMPORTED = (
    "keyring: imported the legacy signing key files from %s into the store (kid %s); "
    "they are no longer read and can be removed after a backup"
)


class BlastRadiusSource(Protocol):
    """What a revoked key signed that is still valid (the issuance ledger); the result is printed as it is."""

    async def blast_radius(self, kid: str, now: datetime) -> object: ...


@dataclass(frozen=True, slots=True)
class KeyView:
    """One key for ``keys list``: never key bytes."""

    kid: str
    algorithm: str
    state: KeyState
    kek_id: str
    created_at: datetime
    activated_at: datetime | None
    retiring_at: datetime | None
    retired_at: datetime | None

    @classmethod
    def of(cls, r: KeyRecord) -> KeyView:
        return cls(r.kid, r.algorithm, r.state, r.kek_id, r.created_at, r.activated_at, r.retiring_at, r.retired_at)


@dataclass(frozen=True, slots=True)
class Rotation:
    at: datetime
    previous_kid: str  # was active, now retiring
    active_kid: str
    next_kid: str | None  # the fresh next key, None if another next key was already published


@dataclass(frozen=True, slots=True)
class TickResult:
    at: datetime
    rotation: Rotation | None = None
    retired: tuple[str, ...] = ()
    added_next: str | None = None  # a next key was missing and has been added
    deferred: str | None = None  # why a due rotation did not happen now
    lost_to_peer: bool = False  # another replica changed the keyring first; this one reloaded


@dataclass(frozen=True, slots=True)
class Revocation:
    at: datetime
    kid: str
    was: KeyState
    active_kid: str  # the key signing after the revoke
    next_kid: str | None  # the fresh next key, if one was added
    blast_radius: object | None = None
    blast_radius_error: str | None = None


@dataclass(frozen=True, slots=True)
class KekRotation:
    kek_id: str
    rewrapped: tuple[str, ...]
    unchanged: int  # already wrapped by the primary KEK


@dataclass(frozen=True, slots=True)
class _Snapshot:
    records: tuple[KeyRecord, ...]
    active: SigningKey | None
    published: tuple[SigningKey, ...] = field(repr=False)

    def restricted_to(self, records: Sequence[KeyRecord]) -> _Snapshot:
        """This snapshot without the keys ``records`` no longer show live (and without a no-longer-active key)."""
        states = {r.kid: r.state for r in records}
        active = self.active if self.active and states.get(self.active.kid) is KeyState.ACTIVE else None
        published = tuple(k for k in self.published if states.get(k.kid) in LIVE)
        return _Snapshot(tuple(records), active, published)


class Keyring:
    """The signing keyring over a :class:`KeyringStore`; open it with :meth:`open`."""

    def __init__(
        self,
        store: KeyringStore,
        keks: KekRing,
        schedule: RotationSchedule,
        clock: Callable[[], float],
        blast_radius: BlastRadiusSource | None = None,
        max_unconfirmed: float = DEFAULT_MAX_UNCONFIRMED,
    ) -> None:
        self._store, self._keks, self.schedule, self._clock = store, keks, schedule, clock
        self._blast_radius = blast_radius
        self._snapshot = _Snapshot((), None, ())
        self._lock = asyncio.Lock()
        self.max_unconfirmed = max_unconfirmed
        self._confirmed_at: float | None = None  # the clock at the last successful read of the store
        self._opened: tuple[KeyRecord, ...] | None = None  # the records of the last complete snapshot
        self.created: list[tuple[str, KeyState, str]] = []  # (kid, state, "generated" | "imported"), to audit

    @classmethod
    async def open(
        cls,
        store: KeyringStore,
        keks: KekRing,
        schedule: RotationSchedule,
        clock: Callable[[], float],
        legacy_dir: Path | None = None,
        *,
        blast_radius: BlastRadiusSource | None = None,
        max_unconfirmed: float = DEFAULT_MAX_UNCONFIRMED,
    ) -> Keyring:
        """Load the keys (a KEK that cannot open them is a :class:`SealingError`, nothing written); on an empty
        store import the legacy key files once, or generate an active and a next key."""
        keyring = cls(store, keks, schedule, clock, blast_radius, max_unconfirmed)
        records = tuple(await store.keys())
        keyring._snapshot, keyring._opened = keyring._open_snapshot(records), records
        keyring._confirmed_at = clock()
        if keyring._snapshot.active is None:
            await keyring._bootstrap(records, legacy_dir)
        return keyring

    # -- KeyStore (sync, from the snapshot) --

    def active_key(self) -> SigningKey:
        """The signing key, as the store last confirmed it. A replica that has not read the store for
        ``max_unconfirmed`` seconds stops signing (``temporarily_unavailable``): it cannot know whether the key was
        revoked meanwhile (``keys revoke`` on another replica), and a revoked key must not sign for long."""
        active = self._snapshot.active
        if active is None:
            raise TemporarilyUnavailableError("no signing key this replica can use; see the server log")
        if self._confirmed_at is not None and self._clock() - self._confirmed_at > self.max_unconfirmed:
            raise TemporarilyUnavailableError(
                f"the signing keyring has not been confirmed against the store for over {self.max_unconfirmed:g} s"
            )
        return active

    def published_keys(self) -> Sequence[SigningKey]:
        return self._snapshot.published

    def views(self) -> list[KeyView]:
        """Every key the store holds (as of the last reload), oldest first, for ``keys list``."""
        return [KeyView.of(r) for r in self._snapshot.records]

    # -- operations on the store --

    async def reload(self) -> None:
        """Re-read the store and swap the snapshot. If a live key does not open, raise :class:`SealingError` and
        keep only what the store still shows live (a key no longer active stops signing at once)."""
        records = tuple(await self._store.keys())
        if records == self._opened:  # nothing changed since the last complete open: no key to unseal again
            self._confirmed_at = self._clock()
            return
        try:
            snapshot = self._open_snapshot(records)
        except SealingError:
            self._snapshot = self._snapshot.restricted_to(records)
            self._opened = None
            raise
        self._snapshot, self._opened = snapshot, records
        self._confirmed_at = self._clock()

    async def tick(self) -> TickResult:
        """Do what the schedule says is due now: rotate, add a missing next key, retire keys past their overlap."""
        async with self._lock:
            await self.reload()
            now = self._now()
            result = await self._tick_rotation(now)
            retire = await self._only_unused(plan_retirements(self._snapshot.records, self.schedule, now), now)
            if retire is not None:
                if await self._store.apply(retire):
                    result = replace(result, retired=tuple(m.kid for m in retire.moves))
                    log.info("keyring: retired %s", ", ".join(m.kid for m in retire.moves))
                else:
                    result = replace(result, lost_to_peer=True)
                await self.reload()
            return result

    async def rotate(self, now: datetime | None = None) -> Rotation:
        """Rotate now (``keys rotate``), whatever the period; :class:`RotationTooEarlyError` if the next key has
        not been published for ``jwks_max_age + leeway`` (nothing changed)."""
        async with self._lock:
            await self.reload()
            at = now or self._now()
            if not in_state(self._snapshot.records, KeyState.NEXT):
                kid = await self._add_next(at)
                raise RotationTooEarlyError(
                    f"no next key was published: {kid} is published now and can sign from "
                    f"{(at + self.schedule.publish_lead).isoformat()} (jwks_max_age + leeway); rotate again then"
                )
            change = plan_rotation(self._snapshot.records, self.schedule, at, self._fresh(at))
            if not await self._store.apply(change):
                await self.reload()
                raise StoreConflictError("another replica changed the keyring at the same time: run keys list")
            await self.reload()
            return _rotation(change)

    async def revoke(self, kid: str) -> Revocation:
        """Revoke ``kid`` at once (a suspected compromise); if it was active, the next key signs from now on."""
        async with self._lock:
            for _ in range(REVOKE_ATTEMPTS):
                await self.reload()
                now = self._now()
                change = plan_revocation(self._snapshot.records, kid, now, self._fresh(now))
                was = next(r.state for r in self._snapshot.records if r.kid == kid)
                if await self._store.apply(change):
                    break
            else:
                raise StoreConflictError(f"the keyring kept changing while revoking {kid}: run keys revoke again")
            await self.reload()
        log.warning("keyring: revoked signing key %s (was %s)", kid, was)
        result = Revocation(now, kid, was, self.active_key().kid, _added(change, KeyState.NEXT))
        return await self._with_blast_radius(result)

    # -- internals --

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _fresh(self, at: datetime) -> Callable[[KeyState], KeyRecord]:
        def fresh(state: KeyState) -> KeyRecord:
            return seal_key(self._keks, SigningKey.generate(), state, at)

        return fresh

    def _open_snapshot(self, records: tuple[KeyRecord, ...]) -> _Snapshot:
        keys = {r.kid: unseal_key(self._keks, r) for r in records if r.state in LIVE}
        by_state = {state: [keys[r.kid] for r in in_state(records, state)] for state in LIVE}
        active = by_state[KeyState.ACTIVE][0] if by_state[KeyState.ACTIVE] else None
        published = (*by_state[KeyState.ACTIVE], *by_state[KeyState.NEXT], *reversed(by_state[KeyState.RETIRING]))
        return _Snapshot(records, active, tuple(published))

    async def _bootstrap(self, records: Sequence[KeyRecord], legacy_dir: Path | None) -> None:
        now = self._now()
        legacy = import_legacy_keys(legacy_dir) if legacy_dir is not None and not records else None
        if legacy is not None:
            active, previous = legacy
            adds = [seal_key(self._keks, active, KeyState.ACTIVE, now)]
            adds += [seal_key(self._keks, previous, KeyState.RETIRING, now)] if previous else []
        else:
            adds = [self._fresh(now)(KeyState.ACTIVE)]
        if legacy is not None or not in_state(records, KeyState.NEXT):
            adds.append(self._fresh(now)(KeyState.NEXT))
        try:
            won = await self._store.apply(KeyringChange(at=now, adds=tuple(adds)))
        except StoreConflictError:  # another replica started first (a second active key, or the same legacy kid)
            won = False
        await self.reload()
        if self._snapshot.active is None:
            raise StoreConflictError("the keyring store holds no active signing key after start: run keys list")
        if won:
            origin = "imported" if legacy is not None else "generated"
            self.created += [(r.kid, r.state, "generated" if r.state is KeyState.NEXT else origin) for r in adds]
        if won and legacy is not None:
            log.info(_IMPORTED, legacy_dir, legacy[0].kid)
        elif won:
            log.info("keyring: generated signing key %s (active) and a next key", adds[0].kid)

    async def _tick_rotation(self, now: datetime) -> TickResult:
        records = self._snapshot.records
        active = in_state(records, KeyState.ACTIVE)
        if active and now < self.schedule.rotation_due_at(active[0]):
            return TickResult(now)
        if not in_state(records, KeyState.NEXT):
            added = await self._add_next(now)
            return TickResult(now, added_next=added, deferred="no next key was published; one has been added")
        try:
            change = plan_rotation(records, self.schedule, now, self._fresh(now))
        except RotationTooEarlyError as exc:
            return TickResult(now, deferred=exc.description)
        if not await self._store.apply(change):
            await self.reload()
            return TickResult(now, lost_to_peer=True)
        await self.reload()
        rotation = _rotation(change)
        log.info("keyring: rotated: %s signs now, %s is retiring", rotation.active_kid, rotation.previous_kid)
        return TickResult(now, rotation=rotation)

    async def _only_unused(self, retire: KeyringChange | None, now: datetime) -> KeyringChange | None:
        """``retire`` without the keys the issuance ledger still knows live tokens of (plus leeway): the schedule's
        window comes from this process's policy, and another replica (or this one before a restart) may have
        allowed longer tokens. A ledger that does not answer retires nothing (the keys stay published)."""
        if retire is None or self._blast_radius is None:
            return retire
        leeway = timedelta(seconds=self.schedule.leeway)
        keep: list[KeyMove] = []
        for move in retire.moves:
            try:
                radius = await self._blast_radius.blast_radius(move.kid, now)
            except BrokerError as exc:
                log.warning("keyring: not retiring %s now: the ledger did not answer (%s)", move.kid, exc.error)
                return None
            valid_until = getattr(radius, "valid_until", None)
            if not isinstance(valid_until, datetime) or valid_until + leeway <= now:
                keep.append(move)
        return replace(retire, moves=tuple(keep)) if keep else None

    async def _add_next(self, at: datetime) -> str:
        record = self._fresh(at)(KeyState.NEXT)
        if await self._store.apply(KeyringChange(at=at, adds=(record,))):
            self.created.append((record.kid, KeyState.NEXT, "generated"))
        await self.reload()
        return record.kid

    async def _with_blast_radius(self, result: Revocation) -> Revocation:
        if self._blast_radius is None:
            return result
        try:
            radius = await self._blast_radius.blast_radius(result.kid, result.at)
        except BrokerError as exc:
            log.error("keyring: %s revoked, but its blast radius is unknown: %s", result.kid, exc.detail)
            return replace(result, blast_radius_error=exc.description)
        return replace(result, blast_radius=radius)


async def rotate_kek(store: KeyringStore, keks: KekRing) -> KekRotation:
    """Re-wrap every key under the primary KEK (``keys rotate-kek``); the signing keys and their kids stay.

    A key another process re-wrapped meanwhile is left as it is. Needs the old KEK among ``keks``' previous ones.
    """
    primary = keks.primary.kek_id
    rewrapped: list[str] = []
    unchanged = 0
    for record in await store.keys():
        if record.kek_id == primary:
            unchanged += 1
            continue
        blob, kek_id = keks.rewrap(record.wrapped_key, key_aad(record.kid, record.algorithm), record.kek_id)
        if await store.rewrap(record.kid, record.kek_id, blob, kek_id):
            rewrapped.append(record.kid)
        else:
            unchanged += 1
    log.info("keyring: re-wrapped %d signing keys under KEK %s", len(rewrapped), primary)
    return KekRotation(primary, tuple(rewrapped), unchanged)


def _rotation(change: KeyringChange) -> Rotation:
    previous = next(m.kid for m in change.moves if m.expected is KeyState.ACTIVE)
    active = next(m.kid for m in change.moves if m.new is KeyState.ACTIVE)
    return Rotation(change.at, previous, active, _added(change, KeyState.NEXT))


def _added(change: KeyringChange, state: KeyState) -> str | None:
    return next((k.kid for k in change.adds if k.state is state), None)
