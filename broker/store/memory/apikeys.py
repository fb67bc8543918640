"""The API-key exception registry's in-memory twin: it refuses what the SQL stores refuse, in the same order.

The rules are :mod:`broker.store.apikey_rows`', shared with the SQL stores:
:func:`~broker.apikeys.model.check_exception` runs first (ValueError), then the name or revision checks
(:class:`~broker.errors.StoreConflictError`, LookupError); every change bumps the ``apikeys`` topic. Times come
back in UTC, as the SQL stores give them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from broker.apikeys.model import ApiKeyException, SealedVersion, UseRecord
from broker.errors import StoreConflictError
from broker.events.topics import APIKEYS
from broker.store.apikey_rows import added, check_uses, name_taken, rotated, stale_revision, updated
from broker.store.memory.changes import MemoryChangeFeed

__all__ = ["MemoryApiKeyStore", "name_taken", "stale_revision"]


class MemoryApiKeyStore:
    def __init__(self, changes: MemoryChangeFeed) -> None:
        self._changes = changes
        self._records: dict[str, ApiKeyException] = {}
        self._versions: dict[str, list[SealedVersion]] = {}
        self._uses: dict[tuple[str, str, int, str], UseRecord] = {}

    async def add(self, record: ApiKeyException, sealed: bytes, kek_id: str, *, at: datetime) -> ApiKeyException:
        stored = added(record, at)
        if stored.name in self._records:
            raise StoreConflictError(name_taken(stored.name))
        self._records[stored.name] = stored
        assert stored.created_at is not None
        self._versions[stored.name] = [SealedVersion(stored.name, 1, bytes(sealed), kek_id, stored.created_at)]
        self._changes.bump(APIKEYS)
        return stored

    async def get(self, name: str) -> ApiKeyException | None:
        return self._records.get(name)

    async def list_all(self) -> tuple[ApiKeyException, ...]:
        return tuple(self._records[name] for name in sorted(self._records))

    async def update(self, record: ApiKeyException, *, at: datetime) -> ApiKeyException:
        stored = self._records[record.name] = updated(self._records.get(record.name), record, at)
        self._changes.bump(APIKEYS)
        return stored

    async def rotate(
        self, name: str, revision: int, sealed: bytes, kek_id: str, *, at: datetime
    ) -> tuple[ApiKeyException, SealedVersion]:
        stored = rotated(self._records.get(name), name, revision, at)
        assert stored.updated_at is not None
        versions = self._versions[name]
        versions[-1] = replace(versions[-1], superseded_at=stored.updated_at)
        version = SealedVersion(name, stored.current_version, bytes(sealed), kek_id, stored.updated_at)
        versions.append(version)
        self._records[name] = stored
        self._changes.bump(APIKEYS)
        return stored, version

    async def versions(self, name: str) -> tuple[SealedVersion, ...]:
        return tuple(self._versions.get(name, ()))

    async def all_versions(self) -> tuple[SealedVersion, ...]:
        return tuple(v for name in sorted(self._versions) for v in self._versions[name])

    async def rewrap(self, name: str, version: int, old_kek_id: str, sealed: bytes, kek_id: str) -> bool:
        for index, stored in enumerate(self._versions.get(name, ())):
            if stored.version == version and stored.kek_id == old_kek_id:
                self._versions[name][index] = replace(stored, sealed=bytes(sealed), kek_id=kek_id)
                return True
        return False

    async def record_uses(self, uses: Sequence[UseRecord]) -> None:
        check_uses(uses)
        for use in uses:
            if use.name not in self._records:
                continue
            key = (use.name, use.spiffe_id, use.version, use.target)
            known = self._uses.get(key)
            at = use.last_used_at.astimezone(UTC)
            if known is not None:
                at = max(at, known.last_used_at)
            self._uses[key] = replace(use, count=use.count + (0 if known is None else known.count), last_used_at=at)

    async def uses(self, name: str | None = None) -> tuple[UseRecord, ...]:
        return tuple(self._uses[key] for key in sorted(self._uses) if name is None or key[0] == name)
