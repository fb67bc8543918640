"""Numbered SQL migrations, one directory per engine, applied at start; the schema version is recorded.

Files are ``NNNN_name.sql`` (``0001_initial.sql``, ...), numbered from 1 without gaps, and never edited once
released: a change is a new file. Each engine has its own directory (the SQL dialects differ); a test holds the
SQLite and PostgreSQL directories to the same numbers and names. Every applied migration is a row of
``broker_schema (version, name, applied_at)``; the store's version is the highest row.

Two replicas starting at once must not both apply one: the engine serialises the whole check-and-apply (SQLite:
``BEGIN IMMEDIATE``, one writer per database file; PostgreSQL: ``pg_advisory_xact_lock``, held to the end of the
transaction, with DDL that is itself transactional), and the second replica sees the first one's rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from broker.errors import StoreCorruptError, StoreSchemaBehindError, StoreSchemaError

__all__ = ["Migration", "check_history", "check_version", "load"]

_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load(package: str) -> tuple[Migration, ...]:
    """The migrations in ``package`` (a directory of ``NNNN_name.sql``), in order; gaps are a packaging bug."""
    found: list[Migration] = []
    for entry in resources.files(package).iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations in {package} are not numbered 1..n without gaps")
    return tuple(found)


def check_version(current: int, latest: int, *, store: str, migrate: bool) -> None:
    """Refuse a schema this broker cannot use (nothing is changed); pass when ``current`` can reach ``latest``."""
    if current > latest:
        raise StoreSchemaError(
            f"store {store} has schema version {current}, newer than this spiffe-broker knows ({latest}): "
            "upgrade spiffe-broker, or point --store at the right database"
        )
    if current < latest and not migrate:
        raise StoreSchemaBehindError(
            f"store {store} has schema version {current}, this spiffe-broker needs {latest}: "
            "run `spiffe-broker store migrate` (back up the store first)",
            current=current,
        )


def check_history(applied: list[tuple[int, str]], known: tuple[Migration, ...], *, store: str) -> None:
    """Refuse a ``broker_schema`` whose rows are not this broker's migrations (another program's, or edited)."""
    names = {m.version: m.name for m in known}
    for version, name in applied:
        if version in names and names[version] != name:
            raise StoreCorruptError(
                f"store {store} records migration {version} as {name!r}, not {names[version]!r}: it belongs to "
                "another program or was edited; point --store at the broker's own database (nothing was changed)"
            )
