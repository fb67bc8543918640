"""``spiffe-broker quarantine add|release|list`` on a real SQLite store: local mode on the store directly, and
remote mode against a real admin API over mTLS (the real service and audit adapters over that store).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from broker.admin.adapters import JournalAuditReader, KeyringAdmin, StoreStatusInfo, TrailAdminAudit
from broker.admin.app import add_admin_routes
from broker.audit.trail import AuditTrail
from broker.cli.main import main
from broker.cli.quarantine import quarantine
from broker.devtools.devca import DevCA
from broker.events.revocations import SubjectQuarantined, SubjectReleased, TokenRevoked
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.context import server_ssl_context
from broker.store import Store, open_store
from broker.store.url import StoreUrl
from broker.testing import ManualClock
from broker.tokens.quarantine import Quarantines
from broker.web import HardenedAppRunner, start_tcp_site
from tests.unit.cli.cli_helpers import identity_options
from tests.unit.tokens.keyring_helpers import open_keyring
from tests.unit.tokens.quarantine_helpers import WEB, WINDOW, at, entry

SHOP = "spiffe://example.org/ns/shop/*"
BROKER_ID = SpiffeId.parse("spiffe://example.org/broker")
ADMIN_ID = SpiffeId.parse("spiffe://example.org/ops/admin")


@pytest.fixture(autouse=True)
def no_broker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPIFFE_BROKER_STORE__URL", "SPIFFE_BROKER_STATE_DIR", "SPIFFE_BROKER_CONFIG",
                 "SPIFFE_ENDPOINT_SOCKET"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


async def _seed(url: str) -> str:
    """A migrated store whose ledger holds one live token of WEB (issued 10 s ago, for 300 s)."""
    store = await open_store(url)
    try:
        await store.ledger.record([entry("jti-web", WEB, at(ManualClock(time.time()), -10))])
    finally:
        await store.close()
    return url


def _log(url: str) -> list[object]:
    async def read() -> list[object]:
        store = await open_store(url, migrate=False)
        try:
            return [e.event for e in (await store.revocations.read(0)).entries]
        finally:
            await store.close()

    return asyncio.run(read())


def _journal(url: str) -> list[tuple[str, dict[str, Any]]]:
    async def read() -> list[tuple[str, dict[str, Any]]]:
        store = await open_store(url, migrate=False)
        try:
            return [(r.event, json.loads(r.body)) for r in await store.audit.read(1, 100)]
        finally:
            await store.close()

    return asyncio.run(read())


# -- local mode ----------------------------------------------------------------------------------------------------


@pytest.fixture
def url(tmp_path: Path) -> str:
    return asyncio.run(_seed(f"sqlite://{tmp_path}/broker.db"))


def local(url: str, *args: str) -> Result:
    return CliRunner().invoke(quarantine, [*args, "--store", url])


def test_local_add_list_and_release(url: str) -> None:
    added = local(url, "add", SHOP, "--reason", "incident 42", "--until", "2h")
    assert added.exit_code == 0, added.output
    lines = added.output.splitlines()
    assert lines[0].startswith(f"quarantined: {SHOP} (until 20") and lines[0].endswith("; log seq 1")
    assert "  live tokens revoked on the feed: 1" in lines
    assert lines[-1].startswith(f"next: re-key or delete its SPIRE entry, then 'quarantine release {SHOP}' (docs/")
    listed = local(url, "list")
    assert listed.exit_code == 0, listed.output
    header, row = listed.output.splitlines()
    assert header.split() == ["PATTERN", "SINCE", "UNTIL", "REASON"]
    assert row.startswith(SHOP) and row.endswith("incident 42")
    released = local(url, "release", SHOP)
    assert released.exit_code == 0, released.output
    assert released.output.startswith(f"released: {SHOP} (quarantined since 20")
    assert local(url, "list").output == "no quarantine is in force\n"
    assert [type(e) for e in _log(url)] == [SubjectQuarantined, TokenRevoked, SubjectReleased]
    assert [(event, body["actor"]) for event, body in _journal(url)] == [
        ("subject.quarantined", None), ("subject.released", None),
    ]  # fmt: skip


def test_local_list_json_is_the_admin_api_document(url: str) -> None:
    assert local(url, "add", WEB, "--reason", "leaked").exit_code == 0
    document = json.loads(local(url, "list", "--json").output)
    assert [(q["pattern"], q["reason"], q["until"]) for q in document["quarantines"]] == [(WEB, "leaked", None)]
    assert set(document["quarantines"][0]) == {"pattern", "reason", "since", "until", "cutoff_until"}


BAD_LOCAL = [
    ("not a SPIFFE ID", ["add", "web", "--reason", "x"], "Error: invalid_pattern: the pattern is not a SPIFFE ID"),
    ("whole trust domain", ["add", "spiffe://example.org/*", "--reason", "x"], "Error: whole_trust_domain: "),
    ("empty reason", ["add", SHOP, "--reason", ""], "Error: invalid_reason: reason must be 1 to 200"),
    ("until in the past", ["add", SHOP, "--reason", "x", "--until", "2001-01-01T00:00:00Z"], "Error: invalid_until: "),
    ("until not a time", ["add", SHOP, "--reason", "x", "--until", "soon"], "Error: invalid_until: until must be"),
    ("release not quarantined", ["release", SHOP], "Error: not_quarantined: no quarantine of " + SHOP),
    ("release not an ID", ["release", "spiffe://example.org/a/"], "Error: invalid_pattern: "),
]


@pytest.mark.parametrize(("args", "says"), [b[1:] for b in BAD_LOCAL], ids=[b[0] for b in BAD_LOCAL])
def test_local_bad_input_is_one_line_saying_what_to_do_and_changes_nothing(
    url: str, args: list[str], says: str
) -> None:
    result = local(url, *args)
    assert result.exit_code == 1
    assert result.output.startswith(says) and result.output.count("\n") == 1
    assert _log(url) == [] and _journal(url) == []


def test_the_whole_trust_domain_error_names_the_flag_and_the_flag_works(url: str) -> None:
    refused = local(url, "add", "spiffe://example.org/*", "--reason", "x")
    assert "--all-of-trust-domain" in refused.output
    added = local(url, "add", "spiffe://example.org/*", "--reason", "CA compromise", "--all-of-trust-domain")
    assert added.exit_code == 0, added.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["add", SHOP], "Missing option '--reason'"),
        (["release", SHOP, "--reason", "x"], "--reason goes with --admin-url"),
        (["list", "--admin-url", "https://127.0.0.1:1"], "needs --server-id"),
        (["list", "--cert", "c.pem"], "--cert go with --admin-url"),
    ],
)
def test_usage_errors_exit_2(args: list[str], says: str) -> None:
    result = CliRunner().invoke(quarantine, args)
    assert result.exit_code == 2 and says in result.output


def test_the_group_is_registered_on_the_main_command() -> None:
    result = CliRunner().invoke(main, ["quarantine", "-h"])
    assert result.exit_code == 0 and result.output.startswith("Usage: spiffe-broker quarantine ")
    assert all(command in result.output for command in ("add", "release", "list"))


# -- remote mode: the admin API over mTLS --------------------------------------------------------------------------


@dataclass
class AdminApi:
    url: str
    store: Store
    ca: DevCA
    directory: Path

    def identity(self, spiffe_id: SpiffeId) -> list[str]:
        return identity_options(self.ca, self.directory, spiffe_id)

    async def run(self, *args: str, caller: SpiffeId = ADMIN_ID) -> Result:
        full = [*args, "--admin-url", self.url, "--server-id", str(BROKER_ID), *self.identity(caller)]
        return await asyncio.to_thread(CliRunner().invoke, quarantine, full)

    async def log(self) -> list[object]:
        return [e.event for e in (await self.store.revocations.read(0)).entries]


@pytest.fixture
async def admin_api(tmp_path: Path) -> AsyncIterator[AdminApi]:
    url = await _seed(f"sqlite://{tmp_path}/broker.db")
    store = await open_store(url)
    trail = AuditTrail(store.audit)
    ca = DevCA.ephemeral("example.org")
    source = InMemorySvidSource(ca, BROKER_ID)
    app = web.Application()
    add_admin_routes(
        app,
        admins=frozenset({ADMIN_ID}),
        bundles=source.x509_bundles,
        keys=KeyringAdmin(await open_keyring(store.keyring, ManualClock(time.time())), trail),
        store=StoreStatusInfo(store, StoreUrl.parse(url)),
        audit_reader=JournalAuditReader(store.audit),
        audit=TrailAdminAudit(trail),
        quarantines=Quarantines(store.revocations, store.ledger, trail, window=lambda: WINDOW, clock=time.time),
    )
    ssl_context = server_ssl_context(source, require_client_cert=False)
    runner = HardenedAppRunner(app, auto_decompress=False)
    await runner.setup()
    try:
        port = await start_tcp_site(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        yield AdminApi(f"https://127.0.0.1:{port}", store, ca, tmp_path)
    finally:
        await runner.cleanup()
        ssl_context.detach()
        await store.close()


async def test_remote_add_list_release_go_through_the_admin_api_audited_under_the_caller(admin_api: AdminApi) -> None:
    added = await admin_api.run("add", SHOP, "--reason", "incident 42", "--json")
    assert added.exit_code == 0, added.output
    document = json.loads(added.output)
    assert (document["quarantine"]["pattern"], document["live_tokens"], document["audited"]) == (SHOP, 1, True)
    assert document["quarantine"]["until"] is None
    quarantined, revoked = await admin_api.log()
    assert isinstance(quarantined, SubjectQuarantined) and quarantined.pattern.text == SHOP
    assert isinstance(revoked, TokenRevoked) and revoked.jti == "jti-web"
    listed = await admin_api.run("list")
    assert listed.exit_code == 0 and listed.output.splitlines()[1].startswith(SHOP)
    released = await admin_api.run("release", SHOP, "--reason", "re-keyed")
    assert released.exit_code == 0, released.output
    assert "tokens issued before" in released.output and "stay refused until" in released.output
    journal = [(r.event, json.loads(r.body)) for r in await admin_api.store.audit.read(1, 100)]
    calls = [(b["path"], b["outcome"], b["actor"]) for e, b in journal if e == "admin.call"]
    assert ("/admin/v1/quarantines/release", "done", str(ADMIN_ID)) in calls
    assert [b["actor"] for e, b in journal if e.startswith("subject.")] == [str(ADMIN_ID)] * 2


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["add", "spiffe://example.org/ns/sh*", "--reason", "x"], "Error: invalid_pattern: admin API refused"),
        (["add", "spiffe://example.org/*", "--reason", "x"], "Error: whole_trust_domain: admin API refused"),
        (["add", SHOP, "--reason", "x", "--until", "-5m"], "Error: invalid_until: admin API refused"),
        (["release", SHOP], "Error: not_quarantined: admin API refused"),
    ],
)
async def test_remote_bad_input_is_one_line_with_the_services_code_and_changes_nothing(
    admin_api: AdminApi, args: list[str], says: str
) -> None:
    result = await admin_api.run(*args)
    assert result.exit_code == 1
    assert result.output.startswith(says) and result.output.count("\n") == 1
    assert await admin_api.log() == []


async def test_remote_caller_that_is_not_an_admin_is_refused(admin_api: AdminApi) -> None:
    result = await admin_api.run("add", SHOP, "--reason", "x", caller=SpiffeId.parse(WEB))
    assert result.exit_code == 1 and result.output.startswith("Error: access_denied: ")
    assert await admin_api.log() == []
