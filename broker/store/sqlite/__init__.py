"""The embedded store: one SQLite file (0600, WAL, durable commits), served from a worker thread."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from broker.audit.journal import Stamped
from broker.store.sqlite._open import MIGRATIONS, open_connection
from broker.store.sqlite._worker import SqliteWorker
from broker.store.sqlite.apikeys import SqliteApiKeyStore
from broker.store.sqlite.audit import SqliteAuditJournal
from broker.store.sqlite.changes import POLL_S, SqliteChangeFeed
from broker.store.sqlite.clients import SqliteClientRegistry
from broker.store.sqlite.issuance import record_issuance
from broker.store.sqlite.keyring import SqliteKeyring
from broker.store.sqlite.ledger import SqliteLedger
from broker.store.sqlite.replay import SqliteReplayCache
from broker.store.sqlite.revocations import SqliteRevocationLog
from broker.tokens.ledger import LedgerRow

__all__ = ["SqliteStore"]


class SqliteStore:
    """Open with :meth:`open`; the file is checked and migrated before it returns."""

    def __init__(
        self, worker: SqliteWorker, *, change_poll_s: float = POLL_S, migrated_from: int | None = None
    ) -> None:
        self._worker = worker
        self.migrated_from = migrated_from
        self._changes = SqliteChangeFeed(worker, poll_s=change_poll_s)
        self._keyring = SqliteKeyring(worker)
        self._audit = SqliteAuditJournal(worker)
        self._ledger = SqliteLedger(worker)
        self._revocations = SqliteRevocationLog(worker)
        self._replay = SqliteReplayCache(worker)
        self._clients = SqliteClientRegistry(worker)
        self._apikeys = SqliteApiKeyStore(worker)

    @classmethod
    async def open(cls, path: Path, *, migrate: bool = True, change_poll_s: float = POLL_S) -> SqliteStore:
        worker = SqliteWorker(path)
        try:
            worker.conn, migrated_from = await worker.call(lambda: open_connection(path, migrate=migrate))
        except BaseException:
            await worker.close()
            raise
        return cls(worker, change_poll_s=change_poll_s, migrated_from=migrated_from)

    @property
    def keyring(self) -> SqliteKeyring:
        return self._keyring

    @property
    def audit(self) -> SqliteAuditJournal:
        return self._audit

    @property
    def changes(self) -> SqliteChangeFeed:
        return self._changes

    @property
    def ledger(self) -> SqliteLedger:
        return self._ledger

    @property
    def revocations(self) -> SqliteRevocationLog:
        return self._revocations

    @property
    def replay(self) -> SqliteReplayCache:
        return self._replay

    @property
    def clients(self) -> SqliteClientRegistry:
        return self._clients

    @property
    def apikeys(self) -> SqliteApiKeyStore:
        return self._apikeys

    async def schema_version(self) -> int:
        row = await self._worker.run(lambda conn: conn.execute("SELECT max(version) FROM broker_schema").fetchone())
        return int(row[0])

    async def record_issuance(self, tokens: Sequence[LedgerRow], events: Sequence[Stamped]) -> None:
        await record_issuance(self._worker, tokens, events)

    @staticmethod
    def latest_version() -> int:
        return len(MIGRATIONS)

    async def close(self) -> None:
        await self._changes.close()
        await self._worker.close()
