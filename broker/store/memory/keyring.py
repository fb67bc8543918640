"""The keyring's in-memory twin: compare-and-set moves, the one-active-key rule, the stores' errors."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from broker.errors import StoreConflictError
from broker.events.topics import KEYRING
from broker.store.base import TWO_ACTIVE, duplicate_kid, moved, unknown_kid
from broker.store.memory.changes import MemoryChangeFeed
from broker.tokens.keystore import KeyRecord, KeyringChange, KeyState

__all__ = ["MemoryKeyring", "apply_to"]


def apply_to(keys: dict[str, KeyRecord], change: KeyringChange) -> dict[str, KeyRecord] | None:
    """``keys`` after ``change`` (a new dict), None when a compare-and-set fails; raises what the stores raise."""
    result = dict(keys)
    for move in change.ordered_moves():
        current = result.get(move.kid)
        if current is None:
            raise StoreConflictError(unknown_kid(move.kid))
        if current.state is not move.expected:
            return None
        result[move.kid] = moved(current, move, change.at)
        _one_active(result)
    for added in change.adds:
        if added.kid in result:
            raise StoreConflictError(duplicate_kid(added.kid))
        result[added.kid] = added
        _one_active(result)
    return result


def _one_active(keys: dict[str, KeyRecord]) -> None:
    if sum(1 for k in keys.values() if k.state is KeyState.ACTIVE) > 1:
        raise StoreConflictError(TWO_ACTIVE)


class MemoryKeyring:
    def __init__(self, changes: MemoryChangeFeed | None = None) -> None:
        self._keys: dict[str, KeyRecord] = {}
        self._lock = asyncio.Lock()
        self._changes = changes if changes is not None else MemoryChangeFeed()

    async def keys(self) -> Sequence[KeyRecord]:
        return sorted(self._keys.values(), key=lambda k: (k.created_at, k.kid))

    async def apply(self, change: KeyringChange) -> bool:
        async with self._lock:
            result = apply_to(self._keys, change)
            if result is None:
                return False
            self._keys = result
            self._changes.bump(KEYRING)
            return True

    async def rewrap(self, kid: str, expected_kek_id: str, wrapped_key: bytes, kek_id: str) -> bool:
        async with self._lock:
            current = self._keys.get(kid)
            if current is None:
                raise StoreConflictError(unknown_kid(kid))
            if current.kek_id != expected_kek_id:
                return False
            self._keys = {**self._keys, kid: replace(current, wrapped_key=wrapped_key, kek_id=kek_id)}
            return True
