"""The in-memory store: a faithful twin of the SQLite and PostgreSQL stores, for unit tests only.

It refuses what they refuse, in the same order and with the same errors (the contract suite runs against all
three): an unknown kid, a duplicate add or a taken ``client_id`` is :class:`StoreConflictError`, as is a change
that leaves two keys ``active`` (the real stores' unique partial index); a move whose key is not in the expected
state makes the whole change a no-op that returns False; the audit journal is append-only. Records are immutable
dataclasses, so a caller cannot change the twin's state by keeping a reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from broker.audit.journal import Stamped, check_stamped
from broker.oauth.replay import MemoryReplayCache
from broker.store.memory.apikeys import MemoryApiKeyStore
from broker.store.memory.audit import MemoryAuditJournal
from broker.store.memory.changes import MemoryChangeFeed
from broker.store.memory.clients import MemoryClientRegistry
from broker.store.memory.keyring import MemoryKeyring, apply_to
from broker.store.memory.ledger import MemoryLedger
from broker.store.memory.revocations import MemoryRevocationLog
from broker.tokens.ledger import LedgerRow, check_rows, entry_of

__all__ = [
    "MemoryApiKeyStore",
    "MemoryAuditJournal",
    "MemoryChangeFeed",
    "MemoryClientRegistry",
    "MemoryKeyring",
    "MemoryReplayCache",
    "MemoryStore",
    "apply_to",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MemoryStore:
    """Everything in this process; ``memory:``. Two handles on one twin: pass the same object twice."""

    def __init__(self, schema_version: int) -> None:
        self._changes = MemoryChangeFeed()
        self._keyring = MemoryKeyring(self._changes)
        self._audit = MemoryAuditJournal()
        self._ledger = MemoryLedger()
        self._revocations = MemoryRevocationLog(self._changes)
        self._replay = MemoryReplayCache()
        self._clients = MemoryClientRegistry(self._changes)
        self._apikeys = MemoryApiKeyStore(self._changes)
        self._version = schema_version
        self.migrated_from: int | None = None

    @property
    def keyring(self) -> MemoryKeyring:
        return self._keyring

    @property
    def audit(self) -> MemoryAuditJournal:
        return self._audit

    @property
    def changes(self) -> MemoryChangeFeed:
        return self._changes

    @property
    def ledger(self) -> MemoryLedger:
        return self._ledger

    @property
    def revocations(self) -> MemoryRevocationLog:
        return self._revocations

    @property
    def replay(self) -> MemoryReplayCache:
        return self._replay

    @property
    def clients(self) -> MemoryClientRegistry:
        return self._clients

    @property
    def apikeys(self) -> MemoryApiKeyStore:
        return self._apikeys

    async def schema_version(self) -> int:
        return self._version

    async def record_issuance(self, tokens: Sequence[LedgerRow], events: Sequence[Stamped]) -> None:
        check_rows(tokens)
        check_stamped(events)
        entries = [entry_of(row) for row in tokens]  # all checked before anything is written
        await self._ledger.record(entries)
        await self._audit.append_many([(name, _EPOCH + timedelta(microseconds=at), body) for name, at, body in events])

    async def close(self) -> None:
        await self._changes.close()
