"""``spiffe-broker audit verify|tail`` against a real local store (SQLite file; PostgreSQL for --json)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from broker.audit.events import AdminCall, KeyRotated, TokenIssued, TokenRefused
from broker.audit.journal import Entry
from broker.cli.audit import audit
from broker.store import open_store
from tests.unit.store.conftest import postgres_cluster, postgres_url
from tests.unit.store.helpers import T0

__all__ = ["postgres_cluster", "postgres_url"]  # the real PostgreSQL fixtures, used here

WEB = "spiffe://example.org/web"
ADMIN = "spiffe://example.org/admin"
EVENTS = [
    TokenIssued("j1", "k1", WEB, WEB, ("https://api",), ("read",), "x5t#S256=abc", "tls_client_auth", 1),
    TokenRefused("invalid_client"),
    KeyRotated("k2", "k1", None, "manual"),
    TokenRefused("invalid_scope", WEB),
    AdminCall(ADMIN, "POST", "/admin/v1/keys/rotate", "ok", 200),
]


def entries() -> list[Entry]:
    return [(e.event, T0 + timedelta(minutes=i), e.body()) for i, e in enumerate(EVENTS)]


def fill(url: str) -> None:
    async def run() -> None:
        store = await open_store(url)
        try:
            await store.audit.append_many(entries())
        finally:
            await store.close()

    asyncio.run(run())


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("SPIFFE_BROKER_STORE__URL", "SPIFFE_BROKER_STATE_DIR", "SPIFFE_BROKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    state = tmp_path / "state"
    fill(f"sqlite://{state}/broker.db")
    return state


def invoke(*args: str) -> Result:
    return CliRunner().invoke(audit, list(args))


def test_verify_reports_an_intact_chain_and_its_head(state_dir: Path) -> None:
    result = invoke("verify", "--state-dir", str(state_dir))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("audit journal intact: 5 records; head 5:")


def test_verify_exits_1_naming_a_changed_record(state_dir: Path) -> None:
    conn = sqlite3.connect(state_dir / "broker.db")
    conn.execute("DROP TRIGGER audit_records_no_update")
    conn.execute("UPDATE audit_records SET body = ? WHERE seq = 3", (b'{"activated":"evil"}',))
    conn.commit()
    conn.close()
    result = invoke("verify", "--store", f"sqlite://{state_dir}/broker.db")
    assert result.exit_code == 1
    assert "audit journal BROKEN at record 3 (changed)" in result.output
    assert "2 records before it are sound (up to 2:" in result.output


def test_verify_with_the_recorded_head_catches_a_deleted_tail(state_dir: Path) -> None:
    head = invoke("verify", "--state-dir", str(state_dir)).output.rsplit("head ", 1)[1].strip()
    conn = sqlite3.connect(state_dir / "broker.db")
    conn.execute("DROP TRIGGER audit_records_no_delete")
    conn.execute("DELETE FROM audit_records WHERE seq >= 4")
    conn.commit()
    conn.close()
    assert invoke("verify", "--state-dir", str(state_dir)).exit_code == 0  # the chain alone cannot see it
    result = invoke("verify", "--state-dir", str(state_dir), "--expect-head", head)
    assert result.exit_code == 1
    assert "BROKEN at record 5 (truncated)" in result.output


def test_verify_refuses_a_malformed_head(state_dir: Path) -> None:
    result = invoke("verify", "--state-dir", str(state_dir), "--expect-head", "five")
    assert result.exit_code == 2
    assert "SEQ:HASH" in result.output


def test_verify_of_a_missing_store_fails_and_creates_nothing(tmp_path: Path) -> None:
    result = invoke("verify", "--state-dir", str(tmp_path / "none"))
    assert result.exit_code == 1
    assert "Error:" in result.output
    assert not (tmp_path / "none" / "broker.db").exists()


def test_tail_prints_the_newest_records_oldest_first(state_dir: Path) -> None:
    result = invoke("tail", "--state-dir", str(state_dir), "--limit", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split(" ")[0] for line in lines] == ["4", "5"]
    assert lines[1].startswith("5 2026-01-02T03:08:05.678901Z admin.call {")


@pytest.mark.parametrize(
    ("filters", "seqs"),
    [
        (["--event", "token.refused"], ["2", "4"]),
        (["--event", "token.*"], ["1", "2", "4"]),
        (["--event", "key.rotated", "--event", "admin.call"], ["3", "5"]),
        (["--spiffe-id", WEB], ["1", "4"]),
        (["--spiffe-id", ADMIN], ["5"]),
        (["--since", "3"], ["3", "4", "5"]),
        (["--since", "2026-01-02T03:06:05.678901+00:00"], ["3", "4", "5"]),
        (["--since", "2", "--limit", "1"], ["2"]),
        (["--since", "1", "--limit", "0", "--event", "token.*"], ["1", "2", "4"]),
    ],
    ids=["event", "event-family", "two-events", "spiffe-id", "actor", "since-seq", "since-time", "since-limit",
         "no-limit"],
)  # fmt: skip
def test_tail_filters(state_dir: Path, filters: list[str], seqs: list[str]) -> None:
    result = invoke("tail", "--state-dir", str(state_dir), *filters)
    assert result.exit_code == 0, result.output
    assert [line.split(" ")[0] for line in result.output.splitlines()] == seqs


@pytest.mark.parametrize("since", ["yesterday", "2026-01-02T03:04:05"], ids=["not-a-time", "no-zone"])
def test_tail_refuses_a_since_it_cannot_read(state_dir: Path, since: str) -> None:
    result = invoke("tail", "--state-dir", str(state_dir), "--since", since)
    assert result.exit_code == 2
    assert "--since" in result.output


def test_tail_json_gives_one_object_per_line_on_postgresql(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPIFFE_BROKER_STORE__URL", raising=False)
    fill(postgres_url)
    result = invoke("tail", "--store", postgres_url, "--json", "--event", "token.issued")
    assert result.exit_code == 0, result.output
    (line,) = result.output.splitlines()
    record = json.loads(line)
    assert set(record) == {"seq", "at", "event", "body", "prev_hash", "hash"}
    assert (record["seq"], record["event"], record["at"]) == (1, "token.issued", "2026-01-02T03:04:05.678901Z")
    assert record["body"]["sub"] == WEB and record["prev_hash"] == "00" * 32
