"""``spiffe-broker exceptions`` against a real admin API over mTLS (the real registry over the in-memory store twin,
a real KEK ring and audit trail): secrets from stdin or a file only, never printed but by ``show --reveal``, the
report's formats and ``--fail-on`` exit codes, and ``--from-workloads`` / ``sync``."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from broker._sealing import Kek, KekRing
from broker.admin.adapters import TrailAdminAudit
from broker.admin.app import add_admin_routes
from broker.apikeys.registry import ApiKeyRegistry
from broker.apikeys.rules import GovernanceRules
from broker.audit.trail import AuditTrail
from broker.cli.exceptions import FAIL_ON_EXIT, exceptions
from broker.cli.main import main
from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.context import server_ssl_context
from broker.store import latest_version
from broker.store.memory import MemoryStore
from broker.web import HardenedAppRunner, start_tcp_site
from tests.unit.admin.fakes import FakeAuditReader, FakeKeyAdmin, FakeStoreInfo
from tests.unit.apikeys.conftest import CANARY, CANARY_2, RecordingLog
from tests.unit.cli.cli_helpers import clean_env, identity_options

BROKER_ID = SpiffeId.parse("spiffe://example.org/broker")
ADMIN_ID = SpiffeId.parse("spiffe://example.org/ops/admin")
WEB = "spiffe://example.org/ns/shop/sa/web"
SECRET = CANARY.decode()
ADD = ["add", "--name", "stripe", "--target", "https://api.stripe.com/v1/", "--owner", "payments",
       "--contact", "payments-oncall@example.org", "--justification", "Stripe offers no workload identity federation",
       "--ticket", "SEC-1234", "--expires", "60d", "--allow", WEB, "--header", "Authorization",
       "--template", "Bearer {secret}"]  # fmt: skip


@pytest.fixture(autouse=True)
def no_broker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPIFFE_BROKER_CONFIG", "SPIFFE_ENDPOINT_SOCKET"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class AdminApi:
    url: str
    store: MemoryStore
    trail: AuditTrail
    ca: DevCA
    directory: Path

    async def run(self, *args: str, stdin: bytes | None = None, caller: SpiffeId = ADMIN_ID) -> Result:
        full = [*args, "--admin-url", self.url, "--server-id", str(BROKER_ID),
                *identity_options(self.ca, self.directory, caller)]  # fmt: skip
        return await asyncio.to_thread(CliRunner().invoke, exceptions, full, input=stdin)

    async def journal(self) -> list[tuple[str, dict[str, Any]]]:
        await self.trail.flush()
        return [(r.event, json.loads(r.body)) for r in await self.store.audit.read(1, 1000)]

    def secret_file(self, content: bytes, name: str = "key.txt") -> str:
        path = self.directory / name
        path.write_bytes(content)
        path.chmod(0o600)
        return str(path)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[AdminApi]:
    store, ca = MemoryStore(latest_version()), DevCA.ephemeral("example.org")
    source = InMemorySvidSource(ca, BROKER_ID)
    async with AuditTrail(store.audit, batch_window=0.001) as trail:
        registry = ApiKeyRegistry(store.apikeys, RecordingLog(), trail, KekRing(Kek.generate()), GovernanceRules())
        app = web.Application()
        add_admin_routes(app, admins=frozenset({ADMIN_ID}), bundles=source.x509_bundles, keys=FakeKeyAdmin(),
                         store=FakeStoreInfo(), audit_reader=FakeAuditReader([]), audit=TrailAdminAudit(trail),
                         apikeys=registry)  # fmt: skip
        ssl_context = server_ssl_context(source, require_client_cert=False)
        runner = HardenedAppRunner(app, auto_decompress=False)
        await runner.setup()
        try:
            port = await start_tcp_site(runner, "127.0.0.1", 0, ssl_context=ssl_context)
            yield AdminApi(f"https://127.0.0.1:{port}", store, trail, ca, tmp_path)
        finally:
            await runner.cleanup()
            ssl_context.detach()


async def test_the_life_of_an_exception_from_the_command_line(api: AdminApi) -> None:
    added = await api.run(*ADD, "--secret-stdin", stdin=CANARY + b"\n")
    assert added.exit_code == 0, added.output
    assert added.stdout.splitlines() == ["registered: stripe (status active)",
                                         "  apps use the placeholder spiffe-broker:exception/stripe; the sidecar "
                                         "injects the secret"]  # fmt: skip
    listed = await api.run("list")
    assert listed.stdout.splitlines()[1].split()[:3] == ["stripe", "active", "payments"]
    shown = await api.run("show", "stripe")
    assert "presentation:     header Authorization: Bearer {secret}" in shown.stdout
    rotated = await api.run("rotate", "stripe", "--secret-file", api.secret_file(CANARY_2 + b"\r\n"))
    assert rotated.exit_code == 0 and rotated.stdout.startswith("rotated: stripe to version 2")
    outputs = [added, listed, shown, rotated]
    for args in (["review", "stripe", "--note", "still needed"], ["suspend", "stripe", "--reason", "SEC-1301"],
                 ["resume", "stripe"], ["revoke", "stripe", "--reason", "replaced by OAuth"]):  # fmt: skip
        result = await api.run(*args)
        assert result.exit_code == 0, result.output
        outputs.append(result)
    assert outputs[-1].stdout == "revoked: stripe (status revoked)\n"
    events = [(e, b["actor"]) for e, b in await api.journal() if e.startswith("apikey.")]
    assert [e for e, _ in events] == ["apikey.added", "apikey.rotated", "apikey.reviewed", "apikey.suspended",
                                      "apikey.resumed", "apikey.revoked"]  # fmt: skip
    assert {actor for _, actor in events} == {str(ADMIN_ID)}
    journal = json.dumps(await api.journal())
    for secret in (SECRET, CANARY_2.decode()):
        assert secret not in journal and not any(secret in r.output for r in outputs)


async def test_show_reveal_prints_the_secret_alone_and_says_it_is_audited(api: AdminApi) -> None:
    assert (await api.run(*ADD, "--secret-stdin", stdin=CANARY)).exit_code == 0
    revealed = await api.run("show", "stripe", "--reveal", "--reason", "verify at the vendor")
    assert revealed.exit_code == 0 and revealed.stdout == SECRET + "\n"
    assert "recorded in the audit journal" in revealed.stderr
    assert [b["reason"] for e, b in await api.journal() if e == "apikey.revealed"] == ["verify at the vendor"]
    as_json = await api.run("show", "stripe", "--reveal", "--reason", "again", "--json")
    assert json.loads(as_json.stdout) == {"name": "stripe", "version": 1, "secret": SECRET}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["show", "stripe", "--reveal"], "--reveal needs --reason"),
        (["add", "--name", "stripe", "--secret", SECRET], "No such option"),
        (["rotate", "stripe", SECRET], "Got unexpected extra argument"),
        ([*ADD], "exactly one of --secret-stdin and --secret-file"),
        ([*ADD, "--secret-stdin", "--secret-file", "/dev/null"], "exactly one of --secret-stdin and --secret-file"),
        (["list"], "pass --admin-url and --server-id"),
        (["report", "--fail-on", "overdue,stale"], "--fail-on term 'stale'"),
        (["report", "--fail-on", "expiring:14"], "expiring:<N>d"),
        (["add", "--name", "stripe", "--owner", "x", "--secret-stdin"], "add needs --target"),
    ],
    ids=["reveal without reason", "a --secret option", "a secret argument", "no secret source", "two sources",
         "no admin url", "unknown fail-on term", "fail-on without unit", "missing fields"],
)  # fmt: skip
def test_usage_errors_exit_2_and_a_secret_is_never_an_argument(args: list[str], says: str) -> None:
    result = CliRunner().invoke(exceptions, args, input=CANARY)
    assert result.exit_code == 2 and says in result.output, result.output


def test_no_command_has_a_parameter_that_takes_a_secret() -> None:
    assert isinstance(exceptions, click.Group)
    for name, command in exceptions.commands.items():
        for param in command.params:
            assert param.name in (None, "secret_stdin", "secret_file") or "secret" not in (param.name or ""), name
            if param.name in ("secret_stdin",):
                assert isinstance(param, click.Option) and param.is_flag


async def test_an_empty_secret_from_a_pipe_is_refused(api: AdminApi) -> None:
    for stdin in (b"", b"\n", b"\r\n"):
        result = await api.run(*ADD, "--secret-stdin", stdin=stdin)
        assert result.exit_code == 2 and "is empty" in result.output
    assert await api.store.apikeys.list_all() == ()


async def test_a_secret_the_model_refuses_is_refused_before_anything_is_sent_and_never_quoted(api: AdminApi) -> None:
    result = await api.run(*ADD, "--secret-file", api.secret_file(CANARY + b"\r\nX-Injected: 1\n"))
    assert result.exit_code == 1 and result.output.startswith("Error: invalid_exception: ")
    assert SECRET not in result.output and await api.store.apikeys.list_all() == ()
    assert [e for e, _ in await api.journal()] == []  # not even an admin.call: nothing was sent


async def test_a_refusal_of_the_service_is_one_line_with_its_code(api: AdminApi) -> None:
    result = await api.run(*[a if a != "SEC-1234" else "see slack" for a in ADD], "--secret-stdin", stdin=CANARY)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("Error: invalid_exception: admin API refused POST /admin/v1/apikeys: ticket")
    unknown = await api.run("show", "nope")
    assert unknown.exit_code == 1 and unknown.output.startswith("Error: unknown_exception: ")
    denied = await api.run("list", caller=SpiffeId.parse(WEB))
    assert denied.exit_code == 1 and denied.output.startswith("Error: access_denied: ")


async def test_the_report_as_a_table_json_and_csv(api: AdminApi) -> None:
    evil_owner = '=HYPERLINK("https://evil.example")'
    assert (await api.run(*ADD, "--secret-stdin", stdin=CANARY)).exit_code == 0
    owned = [a if a != "payments" else evil_owner for a in ADD]
    assert (
        await api.run(*[a if a != "stripe" else "maps" for a in owned], "--secret-stdin", stdin=CANARY)
    ).exit_code == 0
    table = await api.run("report")
    header, *rows = table.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "OWNER", "STATUS", "EXPIRES"] and "LAST USE" in header
    assert rows[1].split()[:3] == ["stripe", "payments", "active"] and "never" in rows[1]
    as_json = json.loads((await api.run("report", "--json", "--unused-days", "7")).stdout)
    assert as_json["unused_days"] == 7 and [r["name"] for r in as_json["apikeys"]] == ["maps", "stripe"]
    assert {"owner", "status", "days_to_expiry", "review_due", "uses", "idle_days", "unused", "reveal"} <= set(
        as_json["apikeys"][0]
    )  # fmt: skip
    lines = list(csv.reader(io.StringIO((await api.run("report", "--csv")).stdout)))
    assert lines[0][:3] == ["name", "owner", "contact"] and len(lines) == 3
    assert lines[1][1] == "'" + evil_owner  # a spreadsheet shows it, never runs it
    assert SECRET not in table.output + json.dumps(as_json)


@pytest.mark.parametrize(
    ("terms", "code", "matched"),
    [("expiring:90d", FAIL_ON_EXIT, "fail-on: stripe: expiring:90d"), ("expiring:14d,overdue,reveal", 0, ""),
     ("unused:1d", 0, "")],
    ids=["expiring matches", "nothing matches", "created today is not idle"],
)  # fmt: skip
async def test_fail_on_exits_3_when_an_exception_matches(api: AdminApi, terms: str, code: int, matched: str) -> None:
    assert (await api.run(*ADD, "--secret-stdin", stdin=CANARY)).exit_code == 0
    result = await api.run("report", "--fail-on", terms)
    assert result.exit_code == code, result.output
    assert result.stdout.startswith("NAME") and result.stderr.strip() == matched


# One expiry for every file a test writes: made per call, two files written a second apart differed in
# ``expires_at`` and ``sync`` rightly reported a change the test did not make.
_EXPIRES = (datetime.now(UTC) + timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _workloads(directory: Path, owner: str = "payments", extra: str = "") -> str:
    expires = _EXPIRES
    path = directory / "workloads.yaml"
    path.write_text(f"""\
trust_domain: example.org
defaults: {{parent_id: spiffe://example.org/agent/test, x509_svid_ttl: 3600, jwt_svid_ttl: 300}}
workloads:
  - name: web
    spiffe_id: {WEB}
    selectors: ["k8s:sa:web"]
api_key_exceptions:
  - name: stripe
    target: https://api.stripe.com/v1/
    owner: {owner}
    contact: payments-oncall@example.org
    justification: Stripe offers no workload identity federation
    ticket: SEC-1234
    expires_at: {expires}
    header: {{name: Authorization, template: "Bearer {{secret}}"}}
    workloads: [web]
{extra}""")
    return str(path)


async def test_add_from_a_workloads_file_then_sync_brings_the_metadata_in_line(api: AdminApi) -> None:
    path = _workloads(api.directory)
    added = await api.run("add", "--from-workloads", path, "--name", "stripe", "--secret-stdin", stdin=CANARY)
    assert added.exit_code == 0, added.output
    [record] = await api.store.apikeys.list_all()
    assert (record.owner, [p.text for p in record.allowed], record.review_interval.days) == ("payments", [WEB], 30)
    maps = (
        "  - name: maps\n    target: https://maps.example.com/\n    owner: geo\n    contact: geo@example.org\n"
        "    justification: the maps vendor has no OAuth\n    ticket: GEO-7\n"
        "    expires_at: 2099-01-01T00:00:00Z\n    query: {name: key}\n    workloads: [web]\n"
    )
    _workloads(api.directory, owner="billing", extra=maps)
    dry = await api.run("sync", path, "--dry-run")
    assert dry.exit_code == 0 and "stripe: would change owner" in dry.stdout
    assert "maps: declared, no secret yet" in dry.stdout and "--name maps --secret-stdin" in dry.stdout
    synced = await api.run("sync", path)
    assert synced.exit_code == 0 and "stripe: updated owner" in synced.stdout
    assert (await api.store.apikeys.get("stripe")).owner == "billing"  # type: ignore[union-attr]
    [(_, body)] = [(e, b) for e, b in await api.journal() if e == "apikey.updated"]
    assert body["before"] == {"owner": "payments"} and body["reason"] == "sync from workloads.yaml"
    again = await api.run("sync", path)
    assert "stripe: in line with the file" in again.stdout


async def test_from_workloads_takes_no_metadata_flags(api: AdminApi) -> None:
    path = _workloads(api.directory)
    result = await api.run("add", "--from-workloads", path, "--name", "stripe", "--owner", "x", "--secret-stdin",
                           stdin=CANARY)  # fmt: skip
    assert result.exit_code == 2 and "drop --owner" in result.output


def test_the_group_is_registered_on_the_main_command() -> None:
    result = CliRunner().invoke(main, ["exceptions", "-h"])
    assert result.exit_code == 0 and result.output.startswith("Usage: spiffe-broker exceptions ")
    for command in ("add", "list", "show", "rotate", "suspend", "resume", "revoke", "review", "report", "sync"):
        assert f"  {command} " in result.output


async def test_a_real_process_reads_the_secret_from_dev_stdin(api: AdminApi) -> None:
    """As docs/exceptions.md shows it: ``--secret-file /dev/stdin < key.txt``; the secret is in no argument."""
    args = [
        sys.executable,
        "-m",
        "broker.cli",
        "exceptions",
        *ADD,
        "--secret-file",
        "/dev/stdin",
        "--admin-url",
        api.url,
        "--server-id",
        str(BROKER_ID),
        *identity_options(api.ca, api.directory, ADMIN_ID),
    ]
    assert SECRET not in " ".join(args)
    done = await asyncio.to_thread(subprocess.run, args, input=CANARY + b"\n", capture_output=True, env=clean_env(),
                                   timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert SECRET.encode() not in done.stdout + done.stderr
    [record] = await api.store.apikeys.list_all()
    assert record.name == "stripe"
