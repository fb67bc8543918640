"""The real PostgreSQL cluster of the store contract suite, for the tampering tests."""

from tests.unit.store.conftest import postgres_cluster, postgres_url

__all__ = ["postgres_cluster", "postgres_url"]
