"""``spiffe-broker store status|migrate`` on real stores: SQLite files at every schema version, and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from broker.audit.events import TokenRefused
from broker.audit.trail import AuditTrail
from broker.cli.store import store
from broker.store import latest_version, open_store
from broker.store.sqlite import _open as sqlite_open
from tests.unit.cli.state_helpers import audit_records, seed
from tests.unit.store.conftest import postgres_cluster, postgres_url

__all__ = ["postgres_cluster", "postgres_url"]  # the real PostgreSQL fixtures, used here

LATEST = latest_version()


@pytest.fixture(autouse=True)
def no_broker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPIFFE_BROKER_STORE__URL", "SPIFFE_BROKER_STATE_DIR", "SPIFFE_BROKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(store, list(args))


def at_version_1(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SQLite store made by a binary that knew only migration 1."""
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_open, "MIGRATIONS", sqlite_open.MIGRATIONS[:1])
        asyncio.run(_open_and_close(f"sqlite://{path}"))


async def _refusals(url: str, count: int) -> None:
    opened = await open_store(url)
    try:
        for _ in range(count):
            await AuditTrail(opened.audit).record_now(TokenRefused("invalid_client"))
    finally:
        await opened.close()


async def _open_and_close(url: str) -> None:
    await (await open_store(url)).close()


def test_status_shows_engine_version_keys_ledger_and_audit_head(tmp_path: Path) -> None:
    seeded = seed(f"sqlite://{tmp_path}/state/broker.db", tmp_path)
    asyncio.run(_refusals(seeded.url, 2))
    head = audit_records(seeded.url)[-1]
    assert head.seq == 2
    result = invoke("status", "--state-dir", str(tmp_path / "state"))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"store:  {seeded.url} (sqlite)",
        f"schema: version {LATEST}, the latest this binary knows",
        "keys:   1 next, 1 active, 0 retiring, 0 retired, 0 revoked",
        "ledger: 4 tokens recorded, 3 of them still live",
        f"audit:  {head.seq} records, head {head.seq}:{head.hash.hex()}",
    ]


def test_status_of_a_store_behind_this_binary_names_the_command_and_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at_version_1(tmp_path / "broker.db", monkeypatch)
    result = invoke("status", "--store", f"sqlite://{tmp_path}/broker.db", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "engine": "sqlite",
        "url": f"sqlite://{tmp_path}/broker.db",
        "schema_version": 1,
        "latest_version": LATEST,
        "up_to_date": False,
        "contents": None,
    }
    text = invoke("status", "--store", f"sqlite://{tmp_path}/broker.db")
    assert f"schema: version 1, behind this binary's {LATEST}: run spiffe-broker store migrate" in text.output


def test_status_of_a_new_store_creates_nothing(tmp_path: Path) -> None:
    result = invoke("status", "--state-dir", str(tmp_path / "new"))
    assert result.exit_code == 0, result.output
    assert "schema: none yet (a new store): run spiffe-broker store migrate" in result.output
    assert not (tmp_path / "new").exists()


def test_migrate_applies_what_is_pending_audits_it_once_and_is_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite://{tmp_path}/broker.db"
    at_version_1(tmp_path / "broker.db", monkeypatch)
    first = invoke("migrate", "--store", url)
    assert (first.exit_code, first.output) == (0, f"store {url} migrated from schema version 1 to {LATEST}\n")
    again = invoke("migrate", "--store", url)
    assert (again.exit_code, again.output) == (
        0,
        f"store {url} is at schema version {LATEST}, the latest: nothing to do\n",
    )
    migrated = [json.loads(r.body) for r in audit_records(url) if r.event == "store.migrated"]
    assert migrated == [{"store": url, "from_version": 1, "to_version": LATEST}]


def test_migrate_refuses_a_schema_newer_than_this_binary_and_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/broker.db"
    asyncio.run(_open_and_close(url))
    with contextlib.closing(sqlite3.connect(tmp_path / "broker.db")) as conn:
        conn.execute("INSERT INTO broker_schema (version, name, applied_at) VALUES (?, 'from_the_future', 0)",
                     (LATEST + 1,))  # fmt: skip
        conn.commit()
    before = (tmp_path / "broker.db").read_bytes()
    for command in ("migrate", "status"):
        result = invoke(command, "--store", url)
        assert result.exit_code == 1
        assert result.output.startswith("Error: store_error: ") and "newer than this spiffe-broker" in result.output
    assert (tmp_path / "broker.db").read_bytes() == before


def test_status_and_migrate_on_postgresql_never_show_the_password(postgres_url: str) -> None:
    password_file = Path(postgres_url.rpartition("password_file=")[2])
    password = password_file.read_text().strip()
    migrated = invoke("migrate", "--store", postgres_url)
    assert migrated.exit_code == 0, migrated.output
    assert f"migrated from schema version 0 to {LATEST}" in migrated.output
    result = invoke("status", "--store", postgres_url, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert (document["engine"], document["schema_version"], document["up_to_date"]) == ("postgresql", LATEST, True)
    assert document["contents"] == {
        "keys": {"next": 0, "active": 0, "retiring": 0, "retired": 0, "revoked": 0},
        "ledger_rows": 0,
        "ledger_live": 0,
        "audit_records": 1,
        "audit_head": document["contents"]["audit_head"],
    }
    assert document["contents"]["audit_head"].startswith("1:")
    assert password not in migrated.output + result.output
