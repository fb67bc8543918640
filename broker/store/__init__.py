"""The broker's state store: one URL chooses SQLite (embedded default), PostgreSQL (replicas) or memory (tests).

Each concern declares the small interface it needs where it lives (the keyring's in
:mod:`broker.tokens.keystore`, the audit journal's in :mod:`broker.audit.journal`, the issuance ledger's in
:mod:`broker.tokens.ledger`, the revocation log's in :mod:`broker.tokens.revocation`, the replay cache's in
:mod:`broker.oauth.replay`, the client registry's in :mod:`broker.tokens.clients`, the API-key exceptions' in
:mod:`broker.apikeys.store`); this package implements them three times, and one contract suite
(``tests/unit/store``) holds the three to the same behaviour. :func:`open_store` returns a checked, migrated
store, or raises a :class:`~broker.errors.StoreError` that names what to do.
"""

from __future__ import annotations

from broker.store.base import Store
from broker.store.url import StoreUrl

__all__ = ["Store", "StoreUrl", "latest_version", "open_store"]


def latest_version() -> int:
    """The schema version this broker's migrations reach (the same number on every engine)."""
    from broker.store.sqlite._open import MIGRATIONS

    return len(MIGRATIONS)


async def open_store(url: StoreUrl | str, *, password: str | None = None, migrate: bool = True) -> Store:
    """Open the store ``url`` names; ``migrate=False`` refuses a schema older than this broker's."""
    parsed = StoreUrl.parse(url) if isinstance(url, str) else url
    if parsed.kind == "memory":
        from broker.store.memory import MemoryStore

        return MemoryStore(latest_version())
    if parsed.kind == "sqlite":
        from broker.store.sqlite import SqliteStore

        assert parsed.path is not None
        return await SqliteStore.open(parsed.path, migrate=migrate)
    from broker.store.postgres import PostgresStore

    return await PostgresStore.open(parsed, password=password, migrate_schema=migrate)
