"""``spiffe-broker status`` against a real admin API over mTLS, served in-process: the store, the signing keys and
the clock-drift table of a live :class:`DriftTracker` (what the token service's assertion checks feed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from broker.admin.app import add_admin_routes
from broker.cli.main import main
from broker.cli.status import status
from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.context import server_ssl_context
from broker.tokens.drift import DriftSource, DriftTracker
from broker.web import HardenedAppRunner, start_tcp_site
from tests.unit.admin.fakes import FakeAuditReader, FakeKeyAdmin, FakeStoreInfo, RecordingAudit
from tests.unit.cli.cli_helpers import identity_options

BROKER_ID = SpiffeId.parse("spiffe://example.org/broker")
ADMIN_ID = SpiffeId.parse("spiffe://example.org/ops/admin")
WEB = "spiffe://example.org/ns/shop/sa/web"
AHEAD = "spiffe://example.org/ns/shop/sa/ahead"
BEHIND = "orders-batch"
NOW = 1_767_225_600.0
REPLICA = "broker-0"


@pytest.fixture(autouse=True)
def no_broker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPIFFE_BROKER_CONFIG", "SPIFFE_ENDPOINT_SOCKET", "SPIFFE_BROKER_WORKLOAD_API__SOCKET"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class AdminApi:
    url: str
    ca: DevCA
    directory: Path
    drift: DriftTracker
    audit: RecordingAudit

    async def run(self, *args: str, caller: SpiffeId = ADMIN_ID) -> Result:
        identity = identity_options(self.ca, self.directory, caller)
        full = [*args, "--admin-url", self.url, "--server-id", str(BROKER_ID), *identity]
        return await asyncio.to_thread(CliRunner().invoke, status, full)

    def drifting(self) -> None:
        """AHEAD's clock runs 7 s ahead (beyond half the 10 s leeway), BEHIND's DPoP proofs 2 s behind."""
        for n, skew in enumerate((-6.5, -7.0, -7.5)):
            self.drift.record(AHEAD, DriftSource.ASSERTION, now=NOW + n, iat=NOW + n - skew)
        self.drift.record(BEHIND, DriftSource.DPOP, now=NOW, iat=NOW - 2.0)


@pytest.fixture
async def admin_api(tmp_path: Path) -> AsyncIterator[AdminApi]:
    ca = DevCA.ephemeral("example.org")
    source = InMemorySvidSource(ca, BROKER_ID)
    app, drift, audit = web.Application(), DriftTracker(leeway=10.0), RecordingAudit()
    add_admin_routes(app, admins=frozenset({ADMIN_ID}), bundles=source.x509_bundles, keys=FakeKeyAdmin(),
                     store=FakeStoreInfo(), audit_reader=FakeAuditReader([]), audit=audit, drift=drift,
                     replica=REPLICA)  # fmt: skip
    ssl_context = server_ssl_context(source, require_client_cert=False)
    runner = HardenedAppRunner(app, auto_decompress=False)
    await runner.setup()
    try:
        port = await start_tcp_site(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        yield AdminApi(f"https://127.0.0.1:{port}", ca, tmp_path, drift, audit)
    finally:
        await runner.cleanup()
        ssl_context.detach()


async def test_status_shows_the_store_the_keys_and_the_worst_drifts_marked(admin_api: AdminApi) -> None:
    admin_api.drifting()
    result = await admin_api.run()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"token service {admin_api.url} (replica {REPLICA})"
    assert lines[1] == "  store:        postgresql postgresql://broker:***@db.internal/broker (schema 2)"
    assert lines[2] == "  signing keys: active k-live; 1 active, 1 retiring, 1 revoked"
    table = lines[lines.index("Clock drift (worst offenders)") :]
    assert (
        table[1]
        == f"  {REPLICA} only: each replica keeps its own, in memory, since it started; leeway 10 s, ! beyond 5 s"
    )
    assert table[2].split() == ["CLIENT", "SOURCE", "SAMPLES", "DRIFT", "S", "MEDIAN", "S", "MIN", "S", "MAX", "S"]
    assert table[3].split() == [AHEAD, "client_assertion", "3", "-7.00", "-7.00", "-7.50", "-6.50", "!"]
    assert table[4].split() == [BEHIND, "dpop_proof", "1", "+2.00", "+2.00", "+2.00", "+2.00"]
    assert "negative, the client's clock runs ahead" in table[5]
    assert table[6] == "  !: fix time sync (NTP/chrony) on that client (docs/operations.md, 'A client's clock drifts')"


async def test_the_numbers_line_up_under_their_headers(admin_api: AdminApi) -> None:
    admin_api.drifting()
    lines = (await admin_api.run()).output.splitlines()
    header, first, second = lines[lines.index("Clock drift (worst offenders)") + 2 :][:3]
    assert header.index("DRIFT S") + len("DRIFT S") == first.index("-7.00") + len("-7.00")
    assert first.index("-7.00") == second.index("+2.00")


async def test_json_is_the_admin_api_documents_and_limit_is_passed(admin_api: AdminApi) -> None:
    admin_api.drifting()
    result = await admin_api.run("--json", "--limit", "1")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert set(document) == {"store", "signing_keys", "clock_drift", "exceptions_due_for_review"}
    assert document["exceptions_due_for_review"] is None  # this admin API serves no API-key exceptions
    assert document["store"]["schema_version"] == 2
    assert [key["kid"] for key in document["signing_keys"]["keys"]] == ["k-old", "k-live", "k-gone"]
    drift = document["clock_drift"]
    assert (drift["leeway_seconds"], drift["replica"], drift["scope"]) == (10.0, REPLICA, "replica")
    assert [(c["client"], c["median_seconds"]) for c in drift["clients"]] == [(AHEAD, -7.0)]
    paths = sorted((r.path, r.outcome) for r in admin_api.audit.records)
    served = [("/admin/v1/clock-drift", "served"), ("/admin/v1/keys", "served"), ("/admin/v1/store", "served")]
    assert paths == [("/admin/v1/*", "refused"), *served]  # the API-key report: not served here (404)
    assert next(r.detail for r in admin_api.audit.records if r.path == "/admin/v1/clock-drift")["limit"] == 1


async def test_a_client_in_sync_is_listed_without_a_mark_or_advice(admin_api: AdminApi) -> None:
    admin_api.drift.record(WEB, DriftSource.ASSERTION, now=NOW, iat=NOW - 0.5)
    lines = (await admin_api.run()).output.splitlines()
    assert lines[-2].split() == [WEB, "client_assertion", "1", "+0.50", "+0.50", "+0.50", "+0.50"]
    assert "!" not in lines[-2] and "NTP" not in lines[-1]


async def test_a_replica_with_no_samples_says_so(admin_api: AdminApi) -> None:
    result = await admin_api.run()
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "  no samples yet: no client assertion or DPoP proof verified on this replica"
    )


async def test_a_caller_that_is_not_an_admin_is_refused(admin_api: AdminApi) -> None:
    result = await admin_api.run(caller=SpiffeId.parse(WEB))
    assert result.exit_code == 1 and result.output.startswith("Error: access_denied: ")
    assert result.output.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "and/or the running token service"),
        (["--admin-url", "https://127.0.0.1:1"], "needs --server-id"),
        (["--cert", "c.pem"], "--cert go with --admin-url"),
        (["--admin-url", "https://127.0.0.1:1", "--server-id", "spiffe://example.org/b", "--limit", "0"], "1<=x<=100"),
        (["--admin-url", "https://127.0.0.1:1", "--server-id", "spiffe://example.org/b", "--limit", "101"], "101"),
    ],
    ids=["no admin url", "no server id", "identity without url", "limit 0", "limit 101"],
)
def test_usage_errors_exit_2(args: list[str], says: str) -> None:
    result = CliRunner().invoke(status, args)
    assert result.exit_code == 2 and says in result.output


def test_the_command_is_registered_on_the_main_command() -> None:
    result = CliRunner().invoke(main, ["status", "-h"])
    assert result.exit_code == 0 and result.output.startswith("Usage: spiffe-broker status ")
    assert "--admin-url" in result.output and "--limit" in result.output
