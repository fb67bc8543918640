"""`spiffe-broker entries` as a platform team runs it, against the real SPIRE Server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.cli.main import main
from tests.integration.spire import AGENT_ID, TRUST_DOMAIN, SpireDeployment

pytestmark = pytest.mark.spire

WORKLOADS = f"""\
trust_domain: {TRUST_DOMAIN}
defaults: {{parent_id: "{AGENT_ID}", x509_svid_ttl: 3600, jwt_svid_ttl: 300}}
workloads:
  - name: cli-a
    spiffe_id: spiffe://{TRUST_DOMAIN}/cli/a
    selectors: ["unix:uid:61001"]
    policy: {{audiences: ["https://api.example.org"], scopes: ["read"], max_token_lifetime: 120}}
  - name: cli-b
    spiffe_id: spiffe://{TRUST_DOMAIN}/cli/b
    selectors: ["unix:uid:61002"]
"""
EMPTY = f"trust_domain: {TRUST_DOMAIN}\nworkloads: []\n"
Invoke = Callable[..., tuple[int, str]]


@pytest.fixture
def run(spire: SpireDeployment, tmp_path: Path) -> Iterator[tuple[Path, Invoke]]:
    path = tmp_path / "workloads.yaml"
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, ["entries", *args, str(path), "--server-socket", spire.server_socket])
        return result.exit_code, result.output

    yield path, invoke
    path.write_text(EMPTY)
    invoke("apply")


def test_apply_twice_second_run_reports_no_changes(run: tuple[Path, Invoke]) -> None:
    path, invoke = run
    path.write_text(WORKLOADS)
    code, out = invoke("apply")
    assert code == 0, out
    assert "2 to create" in out
    code, out = invoke("apply")
    assert code == 0, out
    assert "No changes" in out
    assert "applied:" not in out


def test_edited_file_changes_exactly_the_edited_entry(run: tuple[Path, Invoke]) -> None:
    path, invoke = run
    path.write_text(WORKLOADS)
    assert invoke("apply")[0] == 0
    path.write_text(WORKLOADS.replace('"unix:uid:61002"]', '"unix:uid:61002"]\n    x509_svid_ttl: 900'))
    code, out = invoke("plan", "--detailed-exitcode")
    assert code == 2, out
    assert "0 to create, 1 to update, 0 to delete, 1 unchanged" in out
    assert "cli-b" in out and "x509_svid_ttl: 3600 -> 900" in out
    code, out = invoke("apply")
    assert code == 0 and "0 created, 1 updated, 0 deleted" in out


def test_bad_file_names_line_and_field(run: tuple[Path, Invoke]) -> None:
    path, invoke = run
    path.write_text(WORKLOADS.replace("spiffe://example.org/cli/b", "spiffe://example.org/cli/b/"))
    code, out = invoke("plan")
    assert code == 1
    assert "workloads.yaml:" in out and "spiffe_id" in out


def test_parent_no_agent_has_is_warned_about_on_stderr(run: tuple[Path, Invoke]) -> None:
    path, invoke = run
    nowhere = f"spiffe://{TRUST_DOMAIN}/spire/agent/k8s_psat/nowhere/node-1"
    path.write_text(WORKLOADS.replace(AGENT_ID, nowhere))
    code, out = invoke("plan")
    assert code == 0, out
    assert f"warning: workload 'cli-a': parent_id {nowhere} is neither a node alias" in out
    path.write_text(WORKLOADS)
    code, out = invoke("plan")
    assert "warning:" not in out  # AGENT_ID is the join-token alias the fixture made
