"""What the API-key exception registry needs from the store (:class:`ApiKeyStore`): one contract suite runs it on
SQLite, PostgreSQL and the in-memory twin.

* Records are written whole after :func:`~broker.apikeys.model.check_exception`; every write sets ``revision``
  to the stored one plus 1 and ``updated_at``. :meth:`ApiKeyStore.update` is a compare-and-set on ``revision``: a
  concurrent change (another admin, another replica) is :class:`~broker.errors.StoreConflictError`, not a lost
  update.
* :meth:`ApiKeyStore.add` writes the record and its version 1 in one transaction; :meth:`ApiKeyStore.rotate`
  writes version ``current_version + 1``, marks the previous one superseded and bumps the record, in one
  transaction. Sealed versions are never deleted by these calls; :meth:`ApiKeyStore.rewrap` replaces a version's
  sealed bytes and ``kek_id`` only (KEK rotation: the plaintext is unchanged).
* Every change bumps the ``apikeys`` change topic, in the same transaction.
* :meth:`ApiKeyStore.record_uses` adds aggregated use counts (one row per exception, workload, version, target),
  keeping the later ``last_used_at``: the hot path never writes one row per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from broker.apikeys.model import ApiKeyException, SealedVersion, UseRecord

__all__ = ["ApiKeyStore"]


class ApiKeyStore(Protocol):
    async def add(self, record: ApiKeyException, sealed: bytes, kek_id: str, *, at: datetime) -> ApiKeyException:
        """Store a new exception (revision 1, ``current_version`` 1, created = updated = ``at``) with its version 1,
        sealed with :func:`~broker.apikeys.model.secret_aad` ``(name, 1)``. StoreConflictError if the name is
        taken (a revoked exception keeps its name: names are never reused)."""
        ...

    async def get(self, name: str) -> ApiKeyException | None: ...

    async def list_all(self) -> tuple[ApiKeyException, ...]:
        """Every exception, revoked ones included, by name."""
        ...

    async def update(self, record: ApiKeyException, *, at: datetime) -> ApiKeyException:
        """Replace the stored record by ``record`` if the stored ``revision`` is ``record.revision``; the name,
        ``created_at`` and ``current_version`` are kept from the stored row. StoreConflictError otherwise (or when
        the stored record is revoked: revocation is final); LookupError if there is no such exception."""
        ...

    async def rotate(
        self, name: str, revision: int, sealed: bytes, kek_id: str, *, at: datetime
    ) -> tuple[ApiKeyException, SealedVersion]:
        """Add version ``current_version + 1`` (sealed for that number), mark the previous version superseded at
        ``at``: compare-and-set on ``revision`` as :meth:`update`."""
        ...

    async def versions(self, name: str) -> tuple[SealedVersion, ...]:
        """Every stored version of ``name``, oldest first (empty if there is no such exception)."""
        ...

    async def all_versions(self) -> tuple[SealedVersion, ...]:
        """Every stored version of every exception (for KEK rotation and the at-rest audit)."""
        ...

    async def rewrap(self, name: str, version: int, old_kek_id: str, sealed: bytes, kek_id: str) -> bool:
        """Replace the sealed bytes of one version if it is still sealed under ``old_kek_id``; False if not (it
        was re-wrapped meanwhile, or is gone). Not a change of the registry: no revision bump, no topic bump."""
        ...

    async def record_uses(self, uses: Sequence[UseRecord]) -> None:
        """Add each row's ``count`` to the stored row of ``(name, spiffe_id, version, target)`` and keep the later
        ``last_used_at``; rows of unknown exceptions are dropped. One transaction; no topic bump."""
        ...

    async def uses(self, name: str | None = None) -> tuple[UseRecord, ...]:
        """The aggregated uses of ``name`` (every exception if None), by name, spiffe_id, version, target."""
        ...
