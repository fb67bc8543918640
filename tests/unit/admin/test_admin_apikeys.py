"""The API-key exception routes over real TLS with the real registry (in-memory store twin, real KEK ring, real
audit trail): every change by an admin SPIFFE ID only, audited ``requested``/``done`` and as ``apikey.*`` records
naming the admin, the secret in a body only and in no audit record, log line or error body."""

from __future__ import annotations

import base64
import json
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web

from broker._sealing import Kek, KekRing
from broker.admin.app import add_admin_routes
from broker.admin.client import AdminClient
from broker.apikeys.errors import (
    ExceptionConflictError,
    ExceptionExistsError,
    InvalidExceptionError,
    SecretUnavailableError,
    UnknownExceptionError,
)
from broker.apikeys.model import State, Status
from broker.apikeys.registry import Amendment, ApiKeyRegistry
from broker.apikeys.rules import GovernanceRules
from broker.audit.trail import AuditTrail
from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffetls.context import SourceSSLContext, server_ssl_context
from broker.store import latest_version
from broker.store.memory import MemoryStore
from broker.testing import ManualClock
from broker.web import HardenedAppRunner, start_tcp_site
from tests.unit.admin.conftest import ADMIN_ID, WORKLOAD_ID
from tests.unit.admin.fakes import FakeAuditReader, FakeKeyAdmin, FakeStoreInfo, RecordingAudit
from tests.unit.apikeys.conftest import CANARY, CANARY_2, T_START, RecordingLog, sample
from tests.unit.server.token_service_helpers import client_context, request

B64 = base64.b64encode(CANARY).decode()


@dataclass
class ApiKeysApi:
    url: str
    store: MemoryStore
    registry: ApiKeyRegistry
    audit: RecordingAudit
    trail: AuditTrail
    log: RecordingLog

    async def journal(self) -> list[tuple[str, dict[str, Any]]]:
        await self.trail.flush()
        return [(r.event, json.loads(r.body)) for r in await self.store.audit.read(1, 1000)]

    async def everything_recorded(self) -> str:
        return json.dumps([r.detail for r in self.audit.records]) + json.dumps(await self.journal())


@pytest.fixture
async def api(source: InMemorySvidSource) -> AsyncIterator[ApiKeysApi]:
    store, audit, log = MemoryStore(latest_version()), RecordingAudit(), RecordingLog()
    async with AuditTrail(store.audit, batch_window=0.001) as trail:
        registry = ApiKeyRegistry(store.apikeys, log, trail, KekRing(Kek.generate()), GovernanceRules(),
                                  clock=ManualClock(T_START.timestamp()))  # fmt: skip
        app = web.Application()
        add_admin_routes(app, admins=frozenset({ADMIN_ID}), bundles=source.x509_bundles, keys=FakeKeyAdmin(),
                         store=FakeStoreInfo(), audit_reader=FakeAuditReader([]), audit=audit,
                         apikeys=registry)  # fmt: skip
        ssl_context = server_ssl_context(source, require_client_cert=False)
        runner = HardenedAppRunner(app, auto_decompress=False)
        await runner.setup()
        try:
            port = await start_tcp_site(runner, "127.0.0.1", 0, ssl_context=ssl_context)
            yield ApiKeysApi(f"https://127.0.0.1:{port}", store, registry, audit, trail, log)
        finally:
            await runner.cleanup()
            ssl_context.detach()


@pytest.fixture
async def client(api: ApiKeysApi, admin_context: SourceSSLContext) -> AsyncIterator[AdminClient]:
    async with AdminClient(api.url, admin_context) as admin:
        yield admin


@pytest.fixture
def admin_tls(ca: DevCA) -> ssl.SSLContext:
    return client_context(ca.issue_x509_svid(ADMIN_ID, ttl=600), ca)


async def test_the_life_of_an_exception_through_the_admin_api_is_audited_under_the_admin(
    api: ApiKeysApi, client: AdminClient
) -> None:
    added = await client.add_apikey(sample(), CANARY)
    assert added.audited and added.result.status is Status.ACTIVE and added.result.record.current_version == 1
    assert [view.record.name for view in await client.apikeys()] == ["stripe"]
    updated = await client.update_apikey("stripe", Amendment(owner="billing"), reason="team handover")
    assert updated.result.record.owner == "billing"
    rotated = await client.rotate_apikey("stripe", CANARY_2)
    assert (rotated.result.version, rotated.result.superseded, rotated.result.withdrawn) == (2, 1, False)
    reviewed = await client.change_apikey("stripe", "review", "still needed")
    assert reviewed.result.record.last_review_by == str(ADMIN_ID)
    assert (await client.change_apikey("stripe", "suspend", "SEC-1301")).result.record.state is State.SUSPENDED
    assert (await client.change_apikey("stripe", "resume")).result.status is Status.ACTIVE
    revealed = await client.reveal_apikey("stripe", "verify the vendor key")
    assert (revealed.result.version, revealed.result.secret) == (2, CANARY_2.decode())
    shown = await client.apikey("stripe")
    assert [v.version for v in shown.versions] == [1, 2] and shown.versions[0].superseded_at is not None
    assert (await client.change_apikey("stripe", "revoke", "replaced by OAuth")).result.status is Status.REVOKED
    events = [(event, body["actor"]) for event, body in await api.journal() if event.startswith("apikey.")]
    assert events == [(f"apikey.{e}", str(ADMIN_ID)) for e in ("added", "updated", "rotated", "reviewed", "suspended",
                                                               "resumed", "revealed", "revoked")]  # fmt: skip
    assert [type(entry.event).__name__ for entry in api.log.entries] == ["ExceptionWithdrawn"] * 2
    recorded = await api.everything_recorded()
    assert CANARY.decode() not in recorded and CANARY_2.decode() not in recorded
    assert B64 not in recorded and base64.b64encode(CANARY_2).decode() not in recorded


async def test_each_change_is_recorded_requested_then_done_with_what_it_names(
    api: ApiKeysApi, client: AdminClient
) -> None:
    await client.add_apikey(sample(), CANARY)
    await client.change_apikey("stripe", "suspend", "SEC-1301")
    assert [(r.path, r.outcome) for r in api.audit.records] == [
        ("/admin/v1/apikeys", "requested"), ("/admin/v1/apikeys", "done"),
        ("/admin/v1/apikeys/{name}/suspend", "requested"), ("/admin/v1/apikeys/{name}/suspend", "done"),
    ]  # fmt: skip
    add = api.audit.records[0].detail
    assert add["name"] == "stripe" and add["ticket"] == "SEC-1234" and "secret_b64" not in add
    assert api.audit.records[2].detail == {"name": "stripe", "reason": "SEC-1301"}
    assert api.audit.records[3].detail["state"] == "suspended"


async def test_a_workload_that_is_no_admin_is_refused_and_nothing_changes(api: ApiKeysApi, ca: DevCA) -> None:
    workload = client_context(ca.issue_x509_svid(WORKLOAD_ID, ttl=600), ca)
    body = {"name": "stripe", "secret_b64": B64}
    reply = await request(workload, "POST", f"{api.url}/admin/v1/apikeys", json_body=body)
    assert (reply.status, reply.body["error"]) == (403, "access_denied")
    assert await api.store.apikeys.list_all() == ()
    assert CANARY.decode() not in await api.everything_recorded()


BAD_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("secret not base64", {"secret_b64": "c2stbGl2ZQ==!"}, "not base64"),
    ("secret with CR LF", {"secret_b64": base64.b64encode(b"sk_live\r\nX-Evil: 1").decode()}, "CR, LF"),
    ("secret too large", {"secret_b64": base64.b64encode(b"k" * 4097).decode()}, "larger than 4096"),
    ("no secret", {"secret_b64": None}, "secret_b64 is required"),
    ("ticket pattern", {"ticket": "see slack"}, "ticket must match"),
    ("past the lifetime cap", {"expires_at": "120d"}, "more than 90 days"),
    ("whole trust domain allowed", {"allowed": ["spiffe://example.org/*"]}, "every SPIFFE ID"),
    ("template with CR LF", {"presentation": {"kind": "header", "name": "X-Key", "template": "{secret}\r\nX: y"}},
     "no CR or LF"),
    ("an unknown target member", {"target": {"host": "api.stripe.com", "ip": "10.0.0.1"}}, "target takes only"),
    ("reveal without the opt-in", {"delivery": "reveal"}, "allow_reveal"),
]  # fmt: skip


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "stripe", "target": {"host": "api.stripe.com", "path_prefix": "/v1/"}, "owner": "payments",
        "contact": "payments-oncall@example.org", "justification": "Stripe offers no workload identity federation",
        "ticket": "SEC-1234", "expires_at": "60d", "allowed": ["spiffe://example.org/ns/shop/sa/web"],
        "presentation": {"kind": "header", "name": "Authorization", "template": "Bearer {secret}"},
        "secret_b64": B64,
    }  # fmt: skip
    body.update(changes)
    return {name: value for name, value in body.items() if value is not None}


@pytest.mark.parametrize(("changes", "says"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
async def test_a_bad_add_is_invalid_exception_refused_before_anything_and_never_echoes_the_secret(
    api: ApiKeysApi, admin_tls: ssl.SSLContext, changes: dict[str, Any], says: str
) -> None:
    reply = await request(admin_tls, "POST", f"{api.url}/admin/v1/apikeys", json_body=_body(**changes))
    assert (reply.status, reply.body["error"]) == (400, "invalid_exception"), reply.body
    assert says in reply.body["error_description"]
    assert [r.outcome for r in api.audit.records] == ["refused"]
    assert await api.store.apikeys.list_all() == ()
    for secret in [CANARY.decode(), B64, *(str(v) for v in changes.values())]:
        if "secret" in str(changes) and len(secret) > 8:
            assert secret not in json.dumps(reply.body) and secret not in await api.everything_recorded()


async def test_the_admin_api_adds_with_a_duration_and_the_servers_default_review(
    api: ApiKeysApi, admin_tls: ssl.SSLContext
) -> None:
    reply = await request(admin_tls, "POST", f"{api.url}/admin/v1/apikeys", json_body=_body())
    assert reply.status == 200, reply.body
    assert reply.headers["Cache-Control"] == "no-store" and reply.body["review_interval_days"] == 30
    assert reply.body["expires_at"] == (T_START + timedelta(days=60)).isoformat().replace("+00:00", "Z")
    assert reply.body["target"] == {"scheme": "https", "host": "api.stripe.com", "port": 443, "path_prefix": "/v1/",
                                    "wildcard_host": False}  # fmt: skip
    assert "secret" not in json.dumps(reply.body).replace("{secret}", "")


async def test_refusals_map_back_to_their_classes_in_the_client(api: ApiKeysApi, client: AdminClient) -> None:
    with pytest.raises(UnknownExceptionError, match="no API-key exception named 'nope'"):
        await client.apikey("nope")
    await client.add_apikey(sample(), CANARY)
    with pytest.raises(ExceptionExistsError, match="never reused"):
        await client.add_apikey(sample(), CANARY)
    with pytest.raises(ExceptionConflictError, match="not suspended"):
        await client.change_apikey("stripe", "resume")
    with pytest.raises(InvalidExceptionError, match="the current one"):
        await client.rotate_apikey("stripe", CANARY)


async def test_reveal_needs_a_reason_and_a_name_in_the_path_is_a_dns_label(
    api: ApiKeysApi, admin_tls: ssl.SSLContext, client: AdminClient
) -> None:
    await client.add_apikey(sample(), CANARY)
    reply = await request(admin_tls, "POST", f"{api.url}/admin/v1/apikeys/stripe/reveal", json_body={})
    assert (reply.status, reply.body["error"]) == (400, "invalid_request") and "reason is required" in str(reply.body)
    reply = await request(admin_tls, "GET", f"{api.url}/admin/v1/apikeys/Stripe_Key")
    assert (reply.status, reply.body["error"]) == (400, "invalid_request")
    reply = await request(admin_tls, "GET", f"{api.url}/admin/v1/apikeys-report?unused_days=0")
    assert (reply.status, reply.body["error"]) == (400, "invalid_request")


async def test_a_version_sealed_under_a_kek_this_replica_lacks_is_a_clear_500_and_nothing_is_revealed(
    api: ApiKeysApi, client: AdminClient
) -> None:
    await client.add_apikey(sample(), CANARY)
    api.registry._keks = KekRing(Kek.generate())
    with pytest.raises(SecretUnavailableError, match="which is not configured"):
        await client.reveal_apikey("stripe", "check")
    assert "apikey.revealed" not in [event for event, _ in await api.journal()]


async def test_the_report_comes_back_whole(api: ApiKeysApi, client: AdminClient) -> None:
    await client.add_apikey(sample(), CANARY)
    await client.add_apikey(replace(sample(), name="maps"), CANARY_2)
    report = await client.apikeys_report(unused_days=10)
    assert report.unused_days == 10 and [row.name for row in report.rows] == ["maps", "stripe"]
    assert report.rows[1].owner == "payments" and report.rows[1].days_to_expiry == 90


async def test_no_secret_reaches_a_log_line_at_debug(
    api: ApiKeysApi, client: AdminClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.add_apikey(sample(), CANARY)
    await client.rotate_apikey("stripe", CANARY_2)
    await client.reveal_apikey("stripe", "check")
    with pytest.raises(InvalidExceptionError):
        await client.rotate_apikey("stripe", b"bad\nsecret-" + CANARY)
    for secret in (CANARY, CANARY_2):
        assert secret.decode() not in caplog.text and base64.b64encode(secret).decode() not in caplog.text
