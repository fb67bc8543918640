"""The store for replicas: PostgreSQL through a psycopg 3 async connection pool."""

from __future__ import annotations

from collections.abc import Sequence

from broker.audit.journal import Stamped
from broker.store.postgres._pool import MIGRATIONS, PgOptions, Pool, connection, migrate, open_pool
from broker.store.postgres.apikeys import PostgresApiKeyStore
from broker.store.postgres.audit import PostgresAuditJournal
from broker.store.postgres.changes import PostgresChangeFeed
from broker.store.postgres.clients import PostgresClientRegistry
from broker.store.postgres.issuance import record_issuance
from broker.store.postgres.keyring import PostgresKeyring
from broker.store.postgres.ledger import PostgresLedger
from broker.store.postgres.replay import PostgresReplayCache
from broker.store.postgres.revocations import PostgresRevocationLog
from broker.store.url import StoreUrl
from broker.tokens.ledger import LedgerRow

__all__ = ["PgOptions", "PostgresStore"]


class PostgresStore:
    """Open with :meth:`open`: the pool is up and the schema migrated (or refused) before it returns."""

    def __init__(self, pool: Pool, store: str, migrated_from: int | None = None) -> None:
        self._pool = pool
        self.migrated_from = migrated_from
        self._store = store
        self._keyring = PostgresKeyring(pool, store)
        self._audit = PostgresAuditJournal(pool, store)
        self._changes = PostgresChangeFeed(pool, store)
        self._ledger = PostgresLedger(pool, store)
        self._revocations = PostgresRevocationLog(pool, store)
        self._replay = PostgresReplayCache(pool, store)
        self._clients = PostgresClientRegistry(pool, store)
        self._apikeys = PostgresApiKeyStore(pool, store)

    @classmethod
    async def open(
        cls,
        url: StoreUrl,
        *,
        password: str | None = None,
        options: PgOptions | None = None,
        migrate_schema: bool = True,
    ) -> PostgresStore:
        pool = await open_pool(url, password=password, options=options or PgOptions())
        try:
            migrated_from = await migrate(pool, url.redacted(), allow=migrate_schema)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, url.redacted(), migrated_from)

    @property
    def keyring(self) -> PostgresKeyring:
        return self._keyring

    @property
    def audit(self) -> PostgresAuditJournal:
        return self._audit

    @property
    def changes(self) -> PostgresChangeFeed:
        return self._changes

    @property
    def ledger(self) -> PostgresLedger:
        return self._ledger

    @property
    def revocations(self) -> PostgresRevocationLog:
        return self._revocations

    @property
    def replay(self) -> PostgresReplayCache:
        return self._replay

    @property
    def clients(self) -> PostgresClientRegistry:
        return self._clients

    @property
    def apikeys(self) -> PostgresApiKeyStore:
        return self._apikeys

    async def schema_version(self) -> int:
        async with connection(self._pool, self._store) as conn:
            row = await (await conn.execute("SELECT max(version) FROM broker_schema")).fetchone()
        assert row is not None
        return int(row[0])

    async def record_issuance(self, tokens: Sequence[LedgerRow], events: Sequence[Stamped]) -> None:
        await record_issuance(self._pool, self._store, tokens, events)

    @staticmethod
    def latest_version() -> int:
        return len(MIGRATIONS)

    async def close(self) -> None:
        await self._changes.close()
        await self._pool.close()
