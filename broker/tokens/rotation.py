"""The rotation schedule and its overlap rule, and the keyring changes it calls for (pure: no store, no clock).

The overlap rule (issue 9; RFC 7517 §5 key sets, RFC 9111 §5.2.2.1 ``max-age``) keeps every token verifiable by a
verifier that caches the JWKS and refetches it only when the cache expires:

1. **Before it signs**: a key is published as ``next`` for at least ``jwks_max_age + leeway`` before it becomes
   active, so every cached JWKS holds it by then. The next key is created at the previous rotation, hence
   ``rotation_period >= jwks_max_age + leeway`` (:class:`RotationSchedule` refuses less at start), and a scheduled
   rotation never activates a next key younger than that (:meth:`RotationSchedule.activatable_at`; it matters
   after an emergency revoke, whose fresh next key is the documented exception: it is published at once and only
   becomes active at a later rotation, when it is old enough).
2. **After it stops signing**: a ``retiring`` key stays published for at least ``max_token_lifetime + leeway``
   after it stops signing, so every token it signed expires before its key leaves the JWKS.

An emergency revoke breaks rule 1 on purpose for the key it promotes if that key is younger (a verifier that
refetches on an unknown kid, as :mod:`broker.verify` does, recovers at once) and rule 2 for the revoked key: that is
the point of revoking it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from broker.errors import ConfigError, KeyringError
from broker.tokens.keystore import KeyMove, KeyRecord, KeyringChange, KeyState

__all__ = [
    "Activated",
    "KeyFactory",
    "KeyNotLiveError",
    "RotationSchedule",
    "RotationTooEarlyError",
    "UnknownKeyError",
    "plan_retirements",
    "plan_revocation",
    "plan_rotation",
    "signing_since",
]

KeyFactory = Callable[[KeyState], KeyRecord]
"""Makes a fresh, sealed key record in the given state (``next`` or ``active``) at the change's time."""


class UnknownKeyError(KeyringError):
    error = "unknown_key"
    status = 404


class KeyNotLiveError(KeyringError):
    """The key is already retired or revoked: it is out of the JWKS and signs nothing."""

    error = "key_not_live"


class RotationTooEarlyError(KeyringError):
    """The next key has not been published for ``jwks_max_age + leeway`` yet."""

    error = "rotation_too_early"


_MAY_BE_ZERO = frozenset({"keyring.leeway", "keyring.jwks_max_age"})  # max-age=0: revalidate (RFC 9111 §5.2.2.1)


class Activated(Protocol):
    """A key as stored (:class:`KeyRecord`) or as listed (``KeyView``): when it was made and began signing."""

    @property
    def created_at(self) -> datetime: ...

    @property
    def activated_at(self) -> datetime | None: ...


def signing_since(key: Activated) -> datetime:
    """When ``key`` began signing (a key imported as active has no ``activated_at``: its creation)."""
    return key.activated_at or key.created_at


@dataclass(frozen=True, slots=True)
class RotationSchedule:
    """Seconds: how often to rotate, how long verifiers cache the JWKS, the longest token lifetime, the leeway."""

    period: float
    jwks_max_age: float
    max_token_lifetime: float
    leeway: float

    def __post_init__(self) -> None:
        for name, value in self._settings():
            if not math.isfinite(value) or value < 0 or (value == 0 and name not in _MAY_BE_ZERO):
                raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.period < self.jwks_max_age + self.leeway:
            raise ConfigError(
                f"keyring.rotation_period {self.period:g} s is shorter than keyring.jwks_max_age "
                f"{self.jwks_max_age:g} s + keyring.leeway {self.leeway:g} s: a new key must be in every cached "
                f"JWKS before it signs; set rotation_period to at least {self.jwks_max_age + self.leeway:g} s "
                "or lower jwks_max_age"
            )

    def _settings(self) -> tuple[tuple[str, float], ...]:
        return (
            ("keyring.rotation_period", self.period),
            ("keyring.jwks_max_age", self.jwks_max_age),
            ("max_token_lifetime", self.max_token_lifetime),
            ("keyring.leeway", self.leeway),
        )

    @property
    def publish_lead(self) -> timedelta:
        """How long a key is published as ``next`` before it may sign."""
        return timedelta(seconds=self.jwks_max_age + self.leeway)

    @property
    def retire_after(self) -> timedelta:
        """How long a key stays published after it stops signing."""
        return timedelta(seconds=self.max_token_lifetime + self.leeway)

    def rotation_due_at(self, active: Activated) -> datetime:
        return signing_since(active) + timedelta(seconds=self.period)

    def activatable_at(self, next_key: KeyRecord) -> datetime:
        return next_key.created_at + self.publish_lead

    def retire_at(self, retiring: KeyRecord) -> datetime:
        return (retiring.retiring_at or retiring.created_at) + self.retire_after


def in_state(records: Sequence[KeyRecord], state: KeyState) -> list[KeyRecord]:
    """The keys in ``state``, oldest first."""
    return sorted((r for r in records if r.state is state), key=lambda r: (r.created_at, r.kid))


def plan_rotation(
    records: Sequence[KeyRecord], schedule: RotationSchedule, now: datetime, fresh: KeyFactory
) -> KeyringChange:
    """next -> active, active -> retiring, and a fresh next key (unless another next key is already published).

    Raises :class:`RotationTooEarlyError` if the oldest next key is younger than ``jwks_max_age + leeway``.
    """
    actives, nexts = in_state(records, KeyState.ACTIVE), in_state(records, KeyState.NEXT)
    if not nexts:
        raise RotationTooEarlyError("no next key is published: the keyring adds one; rotate when it is old enough")
    promoted = nexts[0]
    ready = schedule.activatable_at(promoted)
    if now < ready:
        raise RotationTooEarlyError(
            f"next key {promoted.kid} has been published since {promoted.created_at.isoformat()}; verifiers may "
            f"cache the JWKS for jwks_max_age {schedule.jwks_max_age:g} s + leeway {schedule.leeway:g} s: rotate "
            f"at or after {ready.isoformat()} (for a suspected compromise, use keys revoke)"
        )
    moves = [KeyMove(promoted.kid, KeyState.NEXT, KeyState.ACTIVE)]
    moves += [KeyMove(a.kid, KeyState.ACTIVE, KeyState.RETIRING) for a in actives]
    adds = () if len(nexts) > 1 else (fresh(KeyState.NEXT),)
    return KeyringChange(at=now, moves=tuple(moves), adds=adds)


def plan_retirements(records: Sequence[KeyRecord], schedule: RotationSchedule, now: datetime) -> KeyringChange | None:
    """retiring -> retired for every key published for ``max_token_lifetime + leeway`` since it stopped signing."""
    moves = tuple(
        KeyMove(r.kid, KeyState.RETIRING, KeyState.RETIRED)
        for r in in_state(records, KeyState.RETIRING)
        if schedule.retire_at(r) <= now
    )
    return KeyringChange(at=now, moves=moves) if moves else None


def plan_revocation(records: Sequence[KeyRecord], kid: str, now: datetime, fresh: KeyFactory) -> KeyringChange:
    """``kid`` -> revoked; if it was active, the oldest next key becomes active; a fresh next key if none is left."""
    record = next((r for r in records if r.kid == kid), None)
    if record is None:
        raise UnknownKeyError(f"no signing key with kid {kid!r}: keys list shows the kids; nothing was changed")
    if record.state in (KeyState.RETIRED, KeyState.REVOKED):
        raise KeyNotLiveError(
            f"signing key {kid} is already {record.state} (since {_when(record.retired_at)}): it is not in the "
            "JWKS and signs nothing; nothing was changed"
        )
    moves = [KeyMove(kid, record.state, KeyState.REVOKED)]
    adds: list[KeyRecord] = []
    others = [r for r in in_state(records, KeyState.NEXT) if r.kid != kid]
    if record.state is KeyState.ACTIVE:
        if others:
            moves.append(KeyMove(others.pop(0).kid, KeyState.NEXT, KeyState.ACTIVE))
        else:
            adds.append(fresh(KeyState.ACTIVE))
    if record.state is not KeyState.RETIRING and not others:
        adds.append(fresh(KeyState.NEXT))
    return KeyringChange(at=now, moves=tuple(moves), adds=tuple(adds))


def _when(at: datetime | None) -> str:
    return at.isoformat() if at is not None else "an unknown time"
