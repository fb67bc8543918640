"""The API-key exception registry's in-memory twin: it refuses what the SQL stores refuse, in the same order.

:func:`~broker.apikeys.model.check_exception` runs first (ValueError), then the name or revision checks
(:class:`~broker.errors.StoreConflictError`, LookupError); every change bumps the ``apikeys`` topic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from broker.apikeys.model import ApiKeyException, SealedVersion, State, UseRecord, check_exception
from broker.errors import StoreConflictError
from broker.events.topics import APIKEYS
from broker.store.memory.changes import MemoryChangeFeed
from broker.tokens.keystore import check_instant

__all__ = ["MemoryApiKeyStore", "name_taken", "stale_revision"]


def name_taken(name: str) -> str:
    return f"an exception named {name!r} exists (names are never reused, revoked ones included): pick another name"


def stale_revision(name: str) -> str:
    return f"exception {name!r} changed meanwhile (or is revoked): read it again and repeat the change"


class MemoryApiKeyStore:
    def __init__(self, changes: MemoryChangeFeed) -> None:
        self._changes = changes
        self._records: dict[str, ApiKeyException] = {}
        self._versions: dict[str, list[SealedVersion]] = {}
        self._uses: dict[tuple[str, str, int, str], UseRecord] = {}

    async def add(self, record: ApiKeyException, sealed: bytes, kek_id: str, *, at: datetime) -> ApiKeyException:
        when = check_instant(at).astimezone(UTC)
        stored = check_exception(replace(record, revision=1, current_version=1, created_at=when, updated_at=when))
        if stored.name in self._records:
            raise StoreConflictError(name_taken(stored.name))
        self._records[stored.name] = stored
        self._versions[stored.name] = [SealedVersion(stored.name, 1, bytes(sealed), kek_id, when)]
        self._changes.bump(APIKEYS)
        return stored

    async def get(self, name: str) -> ApiKeyException | None:
        return self._records.get(name)

    async def list_all(self) -> tuple[ApiKeyException, ...]:
        return tuple(self._records[name] for name in sorted(self._records))

    async def update(self, record: ApiKeyException, *, at: datetime) -> ApiKeyException:
        when = check_instant(at).astimezone(UTC)
        stored = self._current(record.name, record.revision)
        updated = check_exception(
            replace(record, revision=stored.revision + 1, current_version=stored.current_version,
                    created_at=stored.created_at, updated_at=when)
        )  # fmt: skip
        self._records[record.name] = updated
        self._changes.bump(APIKEYS)
        return updated

    async def rotate(
        self, name: str, revision: int, sealed: bytes, kek_id: str, *, at: datetime
    ) -> tuple[ApiKeyException, SealedVersion]:
        when = check_instant(at).astimezone(UTC)
        stored = self._current(name, revision)
        versions = self._versions[name]
        versions[-1] = replace(versions[-1], superseded_at=when)
        added = SealedVersion(name, stored.current_version + 1, bytes(sealed), kek_id, when)
        versions.append(added)
        updated = self._records[name] = replace(
            stored, revision=stored.revision + 1, current_version=added.version, updated_at=when
        )
        self._changes.bump(APIKEYS)
        return updated, added

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
        for use in uses:
            check_instant(use.last_used_at)
            if use.count < 1:
                raise ValueError("a use row counts at least one use")
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

    def _current(self, name: str, revision: int) -> ApiKeyException:
        stored = self._records.get(name)
        if stored is None:
            raise LookupError(f"no exception named {name!r}")
        if stored.revision != revision or stored.state is State.REVOKED:
            raise StoreConflictError(stale_revision(name))
        return stored
