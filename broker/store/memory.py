"""The in-memory store: a faithful twin of the SQLite and PostgreSQL stores, for unit tests only.

It refuses what they refuse, in the same order and with the same errors (the contract suite runs against all
three): an unknown kid or a duplicate add is :class:`StoreConflictError`, as is a change that leaves two keys
``active`` (the real stores' unique partial index); a move whose key is not in the expected state makes the whole
change a no-op that returns False; the audit journal is append-only. Records are immutable dataclasses, so a
caller cannot change the twin's state by keeping a reference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from broker.audit.journal import GENESIS_HASH, AuditRecord, chain_hash, check_event
from broker.errors import StoreConflictError
from broker.store.base import TWO_ACTIVE, duplicate_kid, moved, unknown_kid
from broker.tokens.keystore import KeyRecord, KeyringChange, KeyState

__all__ = ["MemoryAuditJournal", "MemoryKeyring", "MemoryStore", "apply_to"]


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
    def __init__(self) -> None:
        self._keys: dict[str, KeyRecord] = {}
        self._lock = asyncio.Lock()

    async def keys(self) -> Sequence[KeyRecord]:
        return sorted(self._keys.values(), key=lambda k: (k.created_at, k.kid))

    async def apply(self, change: KeyringChange) -> bool:
        async with self._lock:
            result = apply_to(self._keys, change)
            if result is None:
                return False
            self._keys = result
            return True


class MemoryAuditJournal:
    def __init__(self) -> None:
        self._records: list[AuditRecord] = []

    async def append(self, event: str, at: datetime, body: bytes) -> AuditRecord:
        check_event(event, at)
        prev = self._records[-1].hash if self._records else GENESIS_HASH
        seq = len(self._records) + 1
        record = AuditRecord(seq, at, event, bytes(body), prev, chain_hash(prev, seq, at, event, body))
        self._records.append(record)
        return record

    async def read(self, first: int = 1, limit: int = 1000) -> Sequence[AuditRecord]:
        _check_range(first, limit)
        return self._records[first - 1 : first - 1 + limit]

    async def last(self) -> AuditRecord | None:
        return self._records[-1] if self._records else None


def _check_range(first: int, limit: int) -> None:
    if first < 1 or limit < 1:
        raise ValueError("read from seq 1 or later, at least one record")


class MemoryStore:
    """Everything in this process; ``memory:``. Two handles on one twin: pass the same object twice."""

    def __init__(self, schema_version: int) -> None:
        self._keyring = MemoryKeyring()
        self._audit = MemoryAuditJournal()
        self._version = schema_version

    @property
    def keyring(self) -> MemoryKeyring:
        return self._keyring

    @property
    def audit(self) -> MemoryAuditJournal:
        return self._audit

    async def schema_version(self) -> int:
        return self._version

    async def close(self) -> None:
        return None
