"""What the signing keyring needs from a store: wrapped keys, their states, and compare-and-set on state changes.

The keyring (milestone 2, issue 9) is the only writer. It declares this interface; :mod:`broker.store` implements
it on SQLite, PostgreSQL and in memory, and one contract suite (``tests/unit/store``) holds all three to it.

The life of a key, and the only moves a store accepts (anything else is :class:`~broker.errors.StoreConflictError`)::

    next ──► active ──► retiring ──► retired
      │        │           │
      └────────┴───────────┴──────► revoked        (the emergency path: ``keys revoke``)

* ``next``: published in the JWKS, not signing yet; ``active``: signing (at most one key, enforced by the store);
  ``retiring``: published, no longer signing; ``retired`` / ``revoked``: gone from the JWKS.
* :meth:`KeyringStore.apply` is all-or-nothing and compare-and-set: every move names the state it expects, and if
  any key is no longer in it (another replica rotated first) nothing changes and it returns False. So of N
  replicas that attempt the same scheduled rotation, exactly one wins.
* The private key is stored only wrapped (AES-256-GCM under a key-encryption key, done by the keyring); the store
  never sees it in the clear. ``kek_id`` names the KEK that wrapped it; :meth:`KeyringStore.rewrap` swaps the
  wrapping (compare-and-set on ``kek_id``) for ``keys rotate-kek``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

__all__ = ["ALLOWED_MOVES", "KeyMove", "KeyRecord", "KeyState", "KeyringChange", "KeyringStore", "check_instant"]


class KeyState(enum.StrEnum):
    NEXT = "next"
    ACTIVE = "active"
    RETIRING = "retiring"
    RETIRED = "retired"
    REVOKED = "revoked"


ALLOWED_MOVES: frozenset[tuple[KeyState, KeyState]] = frozenset(
    {
        (KeyState.NEXT, KeyState.ACTIVE),
        (KeyState.ACTIVE, KeyState.RETIRING),
        (KeyState.RETIRING, KeyState.RETIRED),
        (KeyState.NEXT, KeyState.REVOKED),
        (KeyState.ACTIVE, KeyState.REVOKED),
        (KeyState.RETIRING, KeyState.REVOKED),
    }
)


def check_instant(at: datetime) -> datetime:
    """``at`` if it is timezone-aware (every store keeps microseconds, UTC); a naive time is refused."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("store timestamps must be timezone-aware")
    return at


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One signing key as stored. ``public_jwk`` is the JWK JSON text the JWKS serves (no private members)."""

    kid: str
    algorithm: str
    state: KeyState
    wrapped_key: bytes = field(repr=False)
    kek_id: str
    public_jwk: str
    created_at: datetime
    activated_at: datetime | None = None
    retiring_at: datetime | None = None
    retired_at: datetime | None = None  # retired or revoked

    def __post_init__(self) -> None:
        if not self.kid or len(self.kid) > 200:
            raise ValueError("a key id is 1 to 200 characters")
        for instant in (self.created_at, self.activated_at, self.retiring_at, self.retired_at):
            if instant is not None:
                check_instant(instant)


@dataclass(frozen=True, slots=True)
class KeyMove:
    """Move key ``kid`` from ``expected`` to ``new`` (compare-and-set)."""

    kid: str
    expected: KeyState
    new: KeyState

    def __post_init__(self) -> None:
        if (self.expected, self.new) not in ALLOWED_MOVES:
            raise ValueError(f"a key cannot move from {self.expected} to {self.new}")


@dataclass(frozen=True, slots=True)
class KeyringChange:
    """One atomic keyring change: new keys to add and moves to make, all or nothing."""

    at: datetime
    moves: tuple[KeyMove, ...] = ()
    adds: tuple[KeyRecord, ...] = ()

    def __post_init__(self) -> None:
        check_instant(self.at)
        kids = [m.kid for m in self.moves] + [k.kid for k in self.adds]
        if len(kids) != len(set(kids)):
            raise ValueError("a keyring change names each key once")

    def ordered_moves(self) -> tuple[KeyMove, ...]:
        """Moves away from ``active`` first (the one-active-key rule holds after each statement), then by kid (one
        lock order on every replica, so two concurrent changes wait for each other instead of deadlocking)."""
        return tuple(sorted(self.moves, key=lambda m: (m.expected is not KeyState.ACTIVE, m.kid)))


class KeyringStore(Protocol):
    async def keys(self) -> Sequence[KeyRecord]:
        """Every key the store holds, oldest first (by ``created_at``, then ``kid``)."""
        ...

    async def apply(self, change: KeyringChange) -> bool:
        """Make ``change`` atomically. False (and nothing changed) if a move's key is not in its expected state.

        Raises :class:`~broker.errors.StoreConflictError` (nothing changed) for an unknown kid, a kid added twice,
        or a change that would leave two keys ``active``.
        """
        ...

    async def rewrap(self, kid: str, expected_kek_id: str, wrapped_key: bytes, kek_id: str) -> bool:
        """Replace key ``kid``'s wrapped bytes and ``kek_id`` (``keys rotate-kek``; the key itself is unchanged).

        Compare-and-set on the KEK: False (nothing changed) if the key is no longer wrapped by ``expected_kek_id``.
        Raises :class:`~broker.errors.StoreConflictError` for an unknown kid.
        """
        ...
