"""``spiffe-broker keys`` on a real store: local mode on SQLite (PostgreSQL for the JSON revoke), and remote mode
against a real admin API over mTLS (the real adapters over a SQLite store, SVIDs from a dev CA in files).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from broker._sealing import Kek, KekRing, generate_kek_file
from broker.admin.adapters import JournalAuditReader, KeyringAdmin, StoreStatusInfo, TrailAdminAudit
from broker.admin.app import add_admin_routes
from broker.apikeys.model import SealedVersion, secret_aad
from broker.audit.trail import AuditTrail
from broker.cli.keys import keys
from broker.cli.main import main
from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.context import server_ssl_context
from broker.store import open_store
from broker.store.url import StoreUrl
from broker.tokens.keyring import Keyring
from broker.tokens.keystore import KeyState
from broker.web import HardenedAppRunner, start_tcp_site
from tests.unit.cli.cli_helpers import identity_options
from tests.unit.cli.state_helpers import API, OTHER, SCHEDULE, WEB, Seeded, audit_records, key_states, seed
from tests.unit.store.apikey_helpers import exception as apikey_exception
from tests.unit.store.conftest import postgres_cluster, postgres_url
from tests.unit.store.helpers import T0

__all__ = ["postgres_cluster", "postgres_url"]  # the real PostgreSQL fixtures, used here


@pytest.fixture(autouse=True)
def no_broker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPIFFE_BROKER_STORE__URL", "SPIFFE_BROKER_STATE_DIR", "SPIFFE_BROKER_CONFIG", "SPIFFE_BROKER_KEK",
                 "SPIFFE_BROKER_KEYRING__KEK_FILE", "SPIFFE_ENDPOINT_SOCKET"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def seeded(tmp_path: Path) -> Seeded:
    return seed(f"sqlite://{tmp_path}/state/broker.db", tmp_path)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(keys, list(args))


def test_list_needs_no_kek_and_shows_states_and_kek_ids(seeded: Seeded) -> None:
    result = invoke("list", "--store", seeded.url)
    assert result.exit_code == 0, result.output
    kek_id = Kek.from_file(seeded.kek_file).kek_id
    lines = result.output.splitlines()
    assert lines[0].split() == ["KID", "STATE", "ALG", "KEK", "CREATED", "ACTIVATED", "RETIRING", "RETIRED"]
    rows = {line.split()[0]: line.split()[1:4] for line in lines[1:]}
    assert rows == {seeded.active: ["active", "ES256", kek_id], seeded.next: ["next", "ES256", kek_id]}


def test_list_json_is_the_admin_api_document(seeded: Seeded) -> None:
    result = invoke("list", "--state-dir", str(Path(seeded.url.removeprefix("sqlite://")).parent), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert {k["kid"]: k["state"] for k in document["keys"]} == {seeded.active: "active", seeded.next: "next"}
    assert set(document["keys"][0]) == {"kid", "algorithm", "state", "kek_id", "created_at", "activated_at",
                                        "retiring_at", "retired_at"}  # fmt: skip


def test_rotate_promotes_the_next_key_and_audits_a_manual_rotation(seeded: Seeded) -> None:
    result = invoke("rotate", "--store", seeded.url, "--kek-file", str(seeded.kek_file))
    assert result.exit_code == 0, result.output
    states = key_states(seeded.url)
    assert states[seeded.next][0] is KeyState.ACTIVE and states[seeded.active][0] is KeyState.RETIRING
    fresh = [kid for kid, (state, _) in states.items() if state is KeyState.NEXT]
    assert result.output.splitlines()[0] == f"active:   {seeded.next} (signing now)"
    assert f"next:     {fresh[0]}" in result.output
    last = audit_records(seeded.url)[-1]
    assert last.event == "key.rotated"
    assert json.loads(last.body) == {"activated": seeded.next, "retiring": seeded.active, "next": fresh[0],
                                     "reason": "manual"}  # fmt: skip


def test_rotate_before_the_next_key_was_published_long_enough_changes_nothing(tmp_path: Path) -> None:
    fresh = seed(f"sqlite://{tmp_path}/broker.db", tmp_path, age=0)
    before, journal = key_states(fresh.url), audit_records(fresh.url)
    result = invoke("rotate", "--store", fresh.url, "--kek-file", str(fresh.kek_file))
    assert result.exit_code == 1
    assert "rotation_too_early" in result.output and "rotate at or after" in result.output
    assert key_states(fresh.url) == before and audit_records(fresh.url) == journal


def test_revoke_prints_the_new_active_key_and_the_blast_radius(seeded: Seeded) -> None:
    result = invoke("revoke", seeded.active, "--store", seeded.url, "--kek-file", str(seeded.kek_file))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"revoked: {seeded.active} (was active): out of the JWKS, signs nothing"
    assert lines[1] == f"active:  {seeded.next} (signing now)"
    assert "  live tokens: 3" in lines
    assert [line.split() for line in lines[lines.index("  subjects:") + 1 : lines.index("  audiences:")]] == [
        ["2", WEB],
        ["1", OTHER],
    ]
    assert lines[lines.index("  audiences:") + 1] == f"    {API}"
    assert any(line.startswith("  valid until: 20") for line in lines)
    states = key_states(seeded.url)
    assert states[seeded.active][0] is KeyState.REVOKED and states[seeded.next][0] is KeyState.ACTIVE
    last = audit_records(seeded.url)[-1]
    assert (last.event, json.loads(last.body)) == (
        "key.revoked",
        {"kid": seeded.active, "activated": seeded.next, "live_tokens": 3, "actor": None},
    )


@pytest.mark.parametrize("kid", ["no-such-kid", "-dash-first-kid", "revoked"])
def test_revoke_of_an_unknown_or_revoked_kid_fails_naming_it_and_changes_nothing(seeded: Seeded, kid: str) -> None:
    if kid == "revoked":
        kid = seeded.next
        assert invoke("revoke", kid, "--store", seeded.url, "--kek-file", str(seeded.kek_file)).exit_code == 0
    before, journal = key_states(seeded.url), audit_records(seeded.url)
    result = invoke("revoke", kid, "--store", seeded.url, "--kek-file", str(seeded.kek_file))
    assert result.exit_code == 1
    expected = "Error: key_not_live:" if kid == seeded.next else "Error: unknown_key: no signing key with kid"
    assert result.output.startswith(expected) and kid in result.output and "nothing was changed" in result.output
    assert key_states(seeded.url) == before and audit_records(seeded.url) == journal


def test_a_kek_that_does_not_open_the_keys_is_refused_and_changes_nothing(seeded: Seeded, tmp_path: Path) -> None:
    wrong = generate_kek_file(tmp_path / "wrong-kek")
    before, journal = key_states(seeded.url), audit_records(seeded.url)
    for command in (["rotate"], ["revoke", seeded.active]):
        result = invoke(*command, "--store", seeded.url, "--kek-file", str(tmp_path / "wrong-kek"))
        assert result.exit_code == 1
        assert result.output.startswith("Error: sealing_error: ") and "not configured" in result.output
        assert wrong.encoded() not in result.output
    assert key_states(seeded.url) == before and audit_records(seeded.url) == journal


def test_rotate_and_revoke_without_a_kek_say_how_to_give_one(seeded: Seeded) -> None:
    result = invoke("rotate", "--store", seeded.url)
    assert result.exit_code == 1
    assert "no key-encryption key: set keyring.kek_file (--kek-file) or SPIFFE_BROKER_KEK" in result.output


def test_rotate_on_an_empty_store_is_refused_instead_of_making_keys(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/broker.db"
    asyncio.run(_migrated(url))
    generate_kek_file(tmp_path / "kek")
    result = invoke("rotate", "--state-dir", str(tmp_path), "--kek-file", str(tmp_path / "kek"))
    assert result.exit_code == 1
    assert (
        result.output
        == "Error: keyring_error: the store holds no signing keys yet: start the token service once (it makes them)\n"
    )
    assert key_states(url) == {}


def test_a_store_behind_this_binary_is_refused_with_the_command_that_migrates_it(tmp_path: Path) -> None:
    result = invoke("list", "--state-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "has schema version 0" in result.output and "spiffe-broker store migrate" in result.output
    assert not (tmp_path / "broker.db").exists()


async def _migrated(url: str) -> None:
    await (await open_store(url)).close()


def test_rotate_kek_rewraps_every_key_once_and_the_new_kek_alone_opens_them(seeded: Seeded, tmp_path: Path) -> None:
    new = generate_kek_file(tmp_path / "kek.new")
    args = ["--store", seeded.url, "--kek-file", str(tmp_path / "kek.new"), "--previous-kek-file", str(seeded.kek_file)]
    first = invoke("rotate-kek", *args)
    assert first.exit_code == 0, first.output
    assert first.output.startswith(f"re-wrapped 2 of 2 signing keys under KEK {new.kek_id}\n")
    assert {kek for _, kek in key_states(seeded.url).values()} == {new.kek_id}
    again = invoke("rotate-kek", *args)
    assert (again.exit_code, again.output) == (
        0,
        f"nothing to re-wrap: all 2 signing keys are wrapped by KEK {new.kek_id}\n",
    )
    rotated = [r for r in audit_records(seeded.url) if r.event == "key.kek_rotated"]
    old_id = Kek.from_file(seeded.kek_file).kek_id
    assert [json.loads(r.body) for r in rotated] == [{"old_kek_id": old_id, "new_kek_id": new.kek_id, "keys": 2,
                                                      "actor": None}]  # fmt: skip
    # the signing keys themselves did not change, and the new KEK alone now opens them
    revoked = invoke("revoke", seeded.active, "--store", seeded.url, "--kek-file", str(tmp_path / "kek.new"))
    assert revoked.exit_code == 0, revoked.output


def test_rotate_kek_rewraps_api_key_secrets_too_and_they_open_under_the_new_kek_alone(
    seeded: Seeded, tmp_path: Path
) -> None:
    old_ring = KekRing(Kek.from_file(seeded.kek_file))
    secret = b"sk_live_CANARY_rotate_kek"

    async def add() -> None:
        store = await open_store(seeded.url)
        try:
            sealed = old_ring.seal(secret, secret_aad("stripe", 1))
            await store.apikeys.add(apikey_exception("stripe"), sealed, old_ring.primary.kek_id, at=T0)
        finally:
            await store.close()

    async def versions() -> tuple[SealedVersion, ...]:
        store = await open_store(seeded.url)
        try:
            return await store.apikeys.versions("stripe")
        finally:
            await store.close()

    asyncio.run(add())
    new = generate_kek_file(tmp_path / "kek.new")
    args = ["--store", seeded.url, "--kek-file", str(tmp_path / "kek.new"), "--previous-kek-file", str(seeded.kek_file)]
    result = invoke("rotate-kek", *args)
    assert result.exit_code == 0, result.output
    assert f"re-wrapped 1 API-key secret versions under KEK {new.kek_id}" in result.output
    (version,) = asyncio.run(versions())
    assert version.kek_id == new.kek_id
    assert KekRing(new).unseal(version.sealed, secret_aad("stripe", 1), version.kek_id) == secret


def test_rotate_kek_without_the_old_kek_changes_nothing(seeded: Seeded, tmp_path: Path) -> None:
    generate_kek_file(tmp_path / "kek.new")
    before = key_states(seeded.url)
    result = invoke("rotate-kek", "--store", seeded.url, "--kek-file", str(tmp_path / "kek.new"))
    assert result.exit_code == 1
    assert "Error: sealing_error: signing key " in result.output and "--previous-kek-file" in result.output
    assert key_states(seeded.url) == before


def test_init_kek_writes_a_private_file_prints_only_its_id_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "kek"
    result = invoke("init-kek", str(path))
    assert result.exit_code == 0, result.output
    kek = Kek.from_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert result.output.startswith(f"wrote KEK {kek.kek_id} to {path} (mode 0600)\n")
    assert kek.encoded() not in result.output
    again = invoke("init-kek", str(path))
    assert again.exit_code == 1 and "never overwritten" in again.output
    assert Kek.from_file(path).kek_id == kek.kek_id


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "--admin-url", "https://127.0.0.1:1", "--store", "sqlite:///x.db"], "--store are for local mode"),
        (["list", "--cert", "c.pem"], "--cert go with --admin-url"),
        (["list", "--admin-url", "https://127.0.0.1:1"], "needs --server-id"),
        (["list", "--admin-url", "http://127.0.0.1:1", "--server-id", "spiffe://e.org/b"], "served over mTLS"),
        (
            ["list", "--admin-url", "https://127.0.0.1:1", "--server-id", "spiffe://e.org/b", "--cert", "c.pem"],
            "--cert and --key go together",
        ),
        (["rotate", "--reason", "drill"], "--reason goes with --admin-url"),
    ],
)
def test_contradictory_flags_are_usage_errors(args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_the_groups_are_registered_on_the_main_command(seeded: Seeded) -> None:
    for group in ("keys", "store", "audit"):
        help_text = CliRunner().invoke(main, [group, "-h"])
        assert help_text.exit_code == 0 and help_text.output.startswith(f"Usage: spiffe-broker {group} ")
    listed = CliRunner().invoke(main, ["keys", "list", "--store", seeded.url])
    assert listed.exit_code == 0 and seeded.active in listed.output


def test_revoke_json_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    seeded = seed(postgres_url, tmp_path)
    result = invoke("revoke", seeded.active, "--store", postgres_url, "--kek-file", str(seeded.kek_file), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    radius = document.pop("blast_radius")
    assert document == {"revoked_kid": seeded.active, "active_kid": seeded.next, "was": "active",
                        "next_kid": document["next_kid"], "audited": True}  # fmt: skip
    assert document["next_kid"] not in (None, seeded.active, seeded.next)
    assert radius["live_tokens"] == 3 and radius["audiences"] == [API]
    assert radius["subjects"] == [{"spiffe_id": WEB, "tokens": 2}, {"spiffe_id": OTHER, "tokens": 1}]
    assert radius["valid_until"].endswith("Z")
    assert key_states(postgres_url)[seeded.active][0] is KeyState.REVOKED


# -- remote mode: the admin API over mTLS --------------------------------------------------------------------------

BROKER_ID = SpiffeId.parse("spiffe://example.org/broker")
ADMIN_ID = SpiffeId.parse("spiffe://example.org/ops/admin")


@dataclass
class AdminApi:
    url: str
    seeded: Seeded
    ca: DevCA
    directory: Path

    def identity(self, spiffe_id: SpiffeId) -> list[str]:
        """``--cert/--key/--bundle`` files of an X.509-SVID for ``spiffe_id``."""
        return identity_options(self.ca, self.directory, spiffe_id)

    async def keys(self, *args: str, caller: SpiffeId = ADMIN_ID) -> Result:
        """``keys ARGS --admin-url URL`` as ``caller``, in a thread (the command runs its own event loop)."""
        server = [] if "--server-id" in args else ["--server-id", str(BROKER_ID)]
        full = [*args, "--admin-url", self.url, *server, *self.identity(caller)]
        return await asyncio.to_thread(CliRunner().invoke, keys, full)


@pytest.fixture
async def admin_api(tmp_path: Path) -> AsyncIterator[AdminApi]:
    """The admin API mounted with the real adapters (keyring, ledger, audit journal) over a real SQLite store."""
    url = f"sqlite://{tmp_path}/state/broker.db"
    seeded = await asyncio.to_thread(seed, url, tmp_path)
    store = await open_store(url)
    keyring = await Keyring.open(store.keyring, KekRing.load(seeded.kek_file, [], {}), SCHEDULE, time.time,
                                 blast_radius=store.ledger)  # fmt: skip
    trail = AuditTrail(store.audit)
    ca = DevCA.ephemeral("example.org")
    source = InMemorySvidSource(ca, BROKER_ID)
    app = web.Application()
    add_admin_routes(
        app,
        admins=frozenset({ADMIN_ID}),
        bundles=source.x509_bundles,
        keys=KeyringAdmin(keyring, trail),
        store=StoreStatusInfo(store, StoreUrl.parse(url)),
        audit_reader=JournalAuditReader(store.audit),
        audit=TrailAdminAudit(trail),
    )
    ssl_context = server_ssl_context(source, require_client_cert=False)
    runner = HardenedAppRunner(app, auto_decompress=False)
    await runner.setup()
    try:
        port = await start_tcp_site(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        yield AdminApi(f"https://127.0.0.1:{port}", seeded, ca, tmp_path)
    finally:
        await runner.cleanup()
        ssl_context.detach()
        await store.close()


async def test_remote_list_rotate_and_revoke_go_through_the_admin_api_audited_under_the_caller(
    admin_api: AdminApi,
) -> None:
    seeded = admin_api.seeded
    listed = await admin_api.keys("list", "--json", "--server-id", str(BROKER_ID))
    assert listed.exit_code == 0, listed.output
    assert {k["kid"]: k["state"] for k in json.loads(listed.output)["keys"]} == {seeded.active: "active",
                                                                                  seeded.next: "next"}  # fmt: skip
    rotated = await admin_api.keys("rotate", "--reason", "drill")
    assert rotated.exit_code == 0, rotated.output
    assert rotated.output.splitlines()[0] == f"active:   {seeded.next} (signing now)"
    revoked = await admin_api.keys("revoke", seeded.active)
    assert revoked.exit_code == 0, revoked.output
    lines = revoked.output.splitlines()
    assert lines[0] == f"revoked: {seeded.active}: out of the JWKS, signs nothing"
    assert "  live tokens: 3" in lines and f"    {API}" in lines
    states = await asyncio.to_thread(key_states, seeded.url)
    assert states[seeded.active][0] is KeyState.REVOKED and states[seeded.next][0] is KeyState.ACTIVE
    records = await asyncio.to_thread(audit_records, seeded.url)
    calls = [json.loads(r.body) for r in records if r.event == "admin.call"]
    assert {(c["actor"], c["path"], c["outcome"]) for c in calls} >= {
        (str(ADMIN_ID), "/admin/v1/keys/rotate", "done"),
        (str(ADMIN_ID), "/admin/v1/keys/{kid}/revoke", "done"),
    }
    assert any(c["detail"].get("reason") == "drill" for c in calls)
    assert [json.loads(r.body)["kid"] for r in records if r.event == "key.revoked"] == [seeded.active]


async def test_remote_revoke_of_an_unknown_kid_fails_naming_it(admin_api: AdminApi) -> None:
    result = await admin_api.keys("revoke", "no-such-kid")
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown_kid: ") and "'no-such-kid'" in result.output


async def test_remote_caller_that_is_not_an_admin_is_refused(admin_api: AdminApi) -> None:
    result = await admin_api.keys("revoke", admin_api.seeded.active, caller=SpiffeId.parse(WEB))
    assert result.exit_code == 1
    assert result.output.startswith("Error: access_denied: ")
    states = await asyncio.to_thread(key_states, admin_api.seeded.url)
    assert states[admin_api.seeded.active][0] is KeyState.ACTIVE


async def test_remote_server_id_is_checked_before_anything_is_sent(admin_api: AdminApi) -> None:
    result = await admin_api.keys("revoke", admin_api.seeded.active, "--server-id", "spiffe://example.org/impostor")
    assert result.exit_code == 1
    assert "spiffe://example.org/impostor" in result.output
    states = await asyncio.to_thread(key_states, admin_api.seeded.url)
    assert states[admin_api.seeded.active][0] is KeyState.ACTIVE


def test_revoke_when_the_ledger_does_not_answer_still_revokes_and_says_the_radius_is_unknown(seeded: Seeded) -> None:
    with contextlib.closing(sqlite3.connect(seeded.url.removeprefix("sqlite://"))) as conn:
        conn.execute("DROP TABLE issued_tokens")
    result = invoke("revoke", seeded.active, "--store", seeded.url, "--kek-file", str(seeded.kek_file), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["blast_radius"], document["blast_radius_error"]) == (None, "state store unavailable; retry later")
    assert "warning: blast radius unknown" in result.stderr
    assert key_states(seeded.url)[seeded.active][0] is KeyState.REVOKED
    last = audit_records(seeded.url)[-1]
    assert json.loads(last.body)["live_tokens"] is None  # unknown, not zero


def test_a_change_the_journal_does_not_take_is_reported_as_made_and_unaudited(seeded: Seeded) -> None:
    with contextlib.closing(sqlite3.connect(seeded.url.removeprefix("sqlite://"))) as conn:
        conn.execute("ALTER TABLE audit_records RENAME TO audit_records_elsewhere")
    result = invoke("rotate", "--store", seeded.url, "--kek-file", str(seeded.kek_file))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: keys rotated ({seeded.next} signs now), but the audit journal did not ")
    assert "the change stands" in result.output
    assert key_states(seeded.url)[seeded.next][0] is KeyState.ACTIVE
