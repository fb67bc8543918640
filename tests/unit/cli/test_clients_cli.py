"""``spiffe-broker clients add|list|show|disable|enable|remove``: local mode on a real SQLite store (its audit
journal) with the registry double standing in for ``Store.clients`` (and once the store's own registry), and
remote mode against a real admin API over mTLS (the real adapter over the same double)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from broker.admin.adapters import JournalAuditReader, RegistryClientAdmin, StoreStatusInfo, TrailAdminAudit
from broker.admin.app import add_admin_routes
from broker.audit.trail import AuditTrail
from broker.cli import clients as clients_module
from broker.cli.clients import clients
from broker.cli.main import main
from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.context import server_ssl_context
from broker.store import Store, open_store
from broker.store.url import StoreUrl
from broker.web import HardenedAppRunner, start_tcp_site
from tests.unit.admin.fakes import FakeKeyAdmin
from tests.unit.cli.cli_helpers import identity_options
from tests.unit.tokens.client_registry_fake import LEGACY, FakeClientRegistry, ec_jwk

BROKER_ID = SpiffeId.parse("spiffe://example.org/broker")
ADMIN_ID = SpiffeId.parse("spiffe://example.org/ops/admin")
URI = "https://keys.example.com/billing/jwks.json"
PRIVATE_D = "c2VjcmV0LXByaXZhdGUta2V5LW1hdGVyaWFs"


@pytest.fixture(autouse=True)
def no_broker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPIFFE_BROKER_STORE__URL", "SPIFFE_BROKER_STATE_DIR", "SPIFFE_BROKER_CONFIG",
                 "SPIFFE_ENDPOINT_SOCKET"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> FakeClientRegistry:
    """The registry every local invocation of this test opens (``Store.clients`` of the store being built)."""
    registry = FakeClientRegistry()
    monkeypatch.setattr(clients_module, "registry_of", lambda store: registry)
    return registry


async def _migrated(url: str) -> str:
    store = await open_store(url)
    await store.close()
    return url


@pytest.fixture
def url(tmp_path: Path, registry: FakeClientRegistry) -> str:
    return asyncio.run(_migrated(f"sqlite://{tmp_path}/broker.db"))


def _journal(url: str) -> list[tuple[str, dict[str, Any]]]:
    async def read() -> list[tuple[str, dict[str, Any]]]:
        store = await open_store(url, migrate=False)
        try:
            return [(r.event, json.loads(r.body)) for r in await store.audit.read(1, 100)]
        finally:
            await store.close()

    return asyncio.run(read())


def jwks_file(directory: Path, document: object, name: str = "jwks.json") -> str:
    path = directory / name
    path.write_text(json.dumps(document))
    return str(path)


def local(url: str, *args: str) -> Result:
    return CliRunner().invoke(clients, [*args, "--store", url])


def test_local_add_list_show_disable_enable_remove(url: str, tmp_path: Path, registry: FakeClientRegistry) -> None:
    keys = jwks_file(tmp_path, {"keys": [ec_jwk("k1"), ec_jwk("k2")]})
    added = local(url, "add", "--client-id", "billing", "--spiffe-id", LEGACY, "--jwks-file", keys)
    assert added.exit_code == 0, added.output
    assert added.output.splitlines() == [
        f"registered: billing (acts as {LEGACY})",
        "  keys: inline: 2 keys (k1, k2); algorithms: ES256; max assertion lifetime: 60 s",
    ]
    uri = local(url, "add", "--client-id", "payroll", "--spiffe-id", LEGACY, "--jwks-uri", URI, "--alg", "ES384",
                "--alg", "PS256", "--max-assertion-lifetime", "120")  # fmt: skip
    assert uri.exit_code == 0, uri.output
    assert registry.clients["payroll"].algorithms == ("ES384", "PS256")
    header, *rows = local(url, "list").output.splitlines()
    assert header.split() == ["CLIENT_ID", "SPIFFE_ID", "STATE", "ALGORITHMS", "KEYS"]
    assert rows[0].split() == ["billing", LEGACY, "enabled", "ES256", "inline:", "2", "keys", "(k1,", "k2)"]
    assert rows[1].split() == ["payroll", LEGACY, "enabled", "ES384,PS256", URI]
    shown = local(url, "show", "payroll").output.splitlines()
    assert f"{'keys:':<24}{URI}" in shown and f"{'max_assertion_lifetime:':<24}120 s" in shown
    assert local(url, "disable", "billing").output == f"disabled: billing (acts as {LEGACY})\n"
    assert registry.clients["billing"].disabled
    assert "disabled" in local(url, "show", "billing").output
    assert local(url, "enable", "billing").exit_code == 0 and not registry.clients["billing"].disabled
    assert local(url, "remove", "billing").output == f"removed: billing (acts as {LEGACY})\n"
    assert list(registry.clients) == ["payroll"]
    assert [(event, body["client_id"], body["actor"]) for event, body in _journal(url)] == [
        ("client.registered", "billing", None), ("client.registered", "payroll", None),
        ("client.disabled", "billing", None), ("client.enabled", "billing", None),
        ("client.removed", "billing", None),
    ]  # fmt: skip


def test_local_json_is_the_admin_api_document(url: str, tmp_path: Path) -> None:
    keys = {"keys": [ec_jwk("k1")]}
    added = local(url, "add", "--client-id", "billing", "--spiffe-id", LEGACY, "--jwks-file",
                  jwks_file(tmp_path, keys), "--json")  # fmt: skip
    document = json.loads(added.output)
    assert (document["client_id"], document["jwks"], document["jwks_uri"], document["audited"]) == (
        "billing", keys, None, True,
    )  # fmt: skip
    listed = json.loads(local(url, "list", "--json").output)
    assert [c["client_id"] for c in listed["clients"]] == ["billing"]
    assert set(listed["clients"][0]) == {"client_id", "spiffe_id", "jwks", "jwks_uri", "algorithms",
                                         "max_assertion_lifetime", "disabled", "created_at", "updated_at"}  # fmt: skip
    assert json.loads(local(url, "show", "billing", "--json").output) == listed["clients"][0]


def test_an_empty_registry_says_so(url: str) -> None:
    assert local(url, "list").output == "no client is registered\n"


BAD_LOCAL: list[tuple[str, list[str], str]] = [
    ("private key", ["--jwks-file", "{private}"], "Error: invalid_client_metadata: jwks must hold public keys only"),
    ("not JSON", ["--jwks-file", "{not-json}"], "not JSON; give a JWK Set (RFC 7517 §5)"),
    ("not an object", ["--jwks-file", "{a-list}"], "not a JWK Set; give a JSON object"),
    (
        "http uri",
        ["--jwks-uri", "http://keys.example.com/"],
        "Error: invalid_client_metadata: jwks_uri must be an https",
    ),
    ("bad alg", ["--jwks-uri", URI, "--alg", "HS256"], "Error: invalid_client_metadata: algorithms must be"),
    ("long lifetime", ["--jwks-uri", URI, "--max-assertion-lifetime", "900"], "max_assertion_lifetime must be 1-300"),
    ("bad SPIFFE ID", ["--jwks-uri", URI, "--spiffe-id", "billing"], "spiffe_id must be a SPIFFE ID"),
]


@pytest.mark.parametrize(("args", "says"), [b[1:] for b in BAD_LOCAL], ids=[b[0] for b in BAD_LOCAL])
def test_local_bad_input_is_one_line_never_quoting_the_key_file_and_changes_nothing(
    url: str, tmp_path: Path, registry: FakeClientRegistry, args: list[str], says: str
) -> None:
    files = {
        "{private}": jwks_file(tmp_path, {"keys": [{**ec_jwk(), "d": PRIVATE_D}]}),
        "{not-json}": str(tmp_path / "broken.json"),
        "{a-list}": jwks_file(tmp_path, [ec_jwk()], "list.json"),
    }
    (tmp_path / "broken.json").write_text(f"{{'d': '{PRIVATE_D}'")
    result = local(url, "add", "--client-id", "billing", "--spiffe-id", LEGACY, *[files.get(a, a) for a in args])
    assert result.exit_code == 1, result.output
    assert says in result.output and result.output.count("\n") == 1 and PRIVATE_D not in result.output
    assert registry.clients == {} and _journal(url) == []


def test_local_refusals_of_the_registry(url: str) -> None:
    assert local(url, "add", "--client-id", "billing", "--spiffe-id", LEGACY, "--jwks-uri", URI).exit_code == 0
    taken = local(url, "add", "--client-id", "billing", "--spiffe-id", LEGACY, "--jwks-uri", URI)
    assert (taken.exit_code, taken.output.split(":")[:2]) == (1, ["Error", " client_exists"])
    for command in ("show", "disable", "enable", "remove"):
        unknown = local(url, command, "nobody")
        assert unknown.exit_code == 1 and unknown.output.startswith("Error: unknown_client: no registered client")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["add", "--client-id", "b", "--spiffe-id", LEGACY], "exactly one of --jwks-file and --jwks-uri"),
        (["add", "--client-id", "b", "--spiffe-id", LEGACY, "--jwks-uri", URI, "--jwks-file", "x.json"],
         "exactly one of --jwks-file and --jwks-uri"),
        (["add", "--spiffe-id", LEGACY, "--jwks-uri", URI], "Missing option '--client-id'"),
        (["disable", "billing", "--reason", "x"], "--reason goes with --admin-url"),
        (["list", "--admin-url", "https://127.0.0.1:1"], "needs --server-id"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(args: list[str], says: str) -> None:
    result = CliRunner().invoke(clients, args)
    assert result.exit_code == 2 and says in result.output


def test_the_group_is_registered_on_the_main_command() -> None:
    result = CliRunner().invoke(main, ["clients", "-h"])
    assert result.exit_code == 0 and result.output.startswith("Usage: spiffe-broker clients ")
    assert all(command in result.output for command in ("add", "list", "show", "disable", "enable", "remove"))


def test_local_changes_reach_the_stores_own_registry(tmp_path: Path) -> None:
    """Without the double: ``registry_of`` is ``Store.clients`` of the SQLite store, which keeps the change."""
    url = asyncio.run(_migrated(f"sqlite://{tmp_path}/real.db"))
    keys = jwks_file(tmp_path, {"keys": [ec_jwk("k1")]})
    added = local(url, "add", "--client-id", "billing", "--spiffe-id", LEGACY, "--jwks-file", keys)
    assert added.exit_code == 0, added.output
    assert local(url, "disable", "billing").exit_code == 0

    async def stored() -> tuple[str, ...]:
        store = await open_store(url, migrate=False)
        try:
            return tuple(f"{c.client_id}:{c.disabled}" for c in await store.clients.list_all())
        finally:
            await store.close()

    assert asyncio.run(stored()) == ("billing:True",)
    assert local(url, "add", "--client-id", "billing", "--spiffe-id", LEGACY, "--jwks-file", keys).exit_code == 1


# -- remote mode: the admin API over mTLS --------------------------------------------------------------------------


@dataclass
class AdminApi:
    url: str
    store: Store
    registry: FakeClientRegistry
    ca: DevCA
    directory: Path

    async def run(self, *args: str, caller: SpiffeId = ADMIN_ID) -> Result:
        identity = identity_options(self.ca, self.directory, caller)
        full = [*args, "--admin-url", self.url, "--server-id", str(BROKER_ID), *identity]
        return await asyncio.to_thread(CliRunner().invoke, clients, full)

    async def journal(self) -> list[tuple[str, dict[str, Any]]]:
        return [(r.event, json.loads(r.body)) for r in await self.store.audit.read(1, 100)]


@pytest.fixture
async def admin_api(tmp_path: Path) -> AsyncIterator[AdminApi]:
    url = f"sqlite://{tmp_path}/broker.db"
    store, registry = await open_store(url), FakeClientRegistry()
    trail, ca = AuditTrail(store.audit), DevCA.ephemeral("example.org")
    source = InMemorySvidSource(ca, BROKER_ID)
    app = web.Application()
    add_admin_routes(app, admins=frozenset({ADMIN_ID}), bundles=source.x509_bundles, keys=FakeKeyAdmin(),
                     store=StoreStatusInfo(store, StoreUrl.parse(url)), audit_reader=JournalAuditReader(store.audit),
                     audit=TrailAdminAudit(trail), clients=RegistryClientAdmin(registry, trail))  # fmt: skip
    ssl_context = server_ssl_context(source, require_client_cert=False)
    runner = HardenedAppRunner(app, auto_decompress=False)
    await runner.setup()
    try:
        port = await start_tcp_site(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        yield AdminApi(f"https://127.0.0.1:{port}", store, registry, ca, tmp_path)
    finally:
        await runner.cleanup()
        ssl_context.detach()
        await store.close()


async def test_remote_changes_go_through_the_admin_api_audited_under_the_caller(admin_api: AdminApi) -> None:
    keys = jwks_file(admin_api.directory, {"keys": [ec_jwk("k1")]})
    added = await admin_api.run("add", "--client-id", "billing", "--spiffe-id", LEGACY, "--jwks-file", keys, "--json")
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["audited"] is True and "billing" in admin_api.registry.clients
    listed = await admin_api.run("list")
    assert listed.exit_code == 0 and listed.output.splitlines()[1].startswith("billing")
    assert (await admin_api.run("show", "billing", "--json")).exit_code == 0
    disabled = await admin_api.run("disable", "billing", "--reason", "migrated to SPIFFE")
    assert disabled.output == f"disabled: billing (acts as {LEGACY})\n"
    assert (await admin_api.run("remove", "billing")).exit_code == 0 and admin_api.registry.clients == {}
    journal = await admin_api.journal()
    assert [(e, b["actor"]) for e, b in journal if e.startswith("client.")] == [
        ("client.registered", str(ADMIN_ID)), ("client.disabled", str(ADMIN_ID)), ("client.removed", str(ADMIN_ID)),
    ]  # fmt: skip
    calls = [(b["path"], b["outcome"], b["detail"].get("reason")) for e, b in journal if e == "admin.call"]
    assert ("/admin/v1/clients/disable", "requested", "migrated to SPIFFE") in calls


async def test_remote_bad_input_is_one_line_with_the_services_code(admin_api: AdminApi) -> None:
    keys = jwks_file(admin_api.directory, {"keys": [{**ec_jwk(), "d": PRIVATE_D}]})
    result = await admin_api.run("add", "--client-id", "billing", "--spiffe-id", LEGACY, "--jwks-file", keys)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("Error: invalid_client_metadata: admin API refused POST /admin/v1/clients: ")
    assert PRIVATE_D not in result.output and admin_api.registry.clients == {}
    unknown = await admin_api.run("show", "nobody")
    assert unknown.exit_code == 1 and unknown.output.startswith("Error: unknown_client: ")


async def test_remote_caller_that_is_not_an_admin_is_refused(admin_api: AdminApi) -> None:
    result = await admin_api.run("list", caller=SpiffeId.parse(LEGACY))
    assert result.exit_code == 1 and result.output.startswith("Error: access_denied: ")
