"""``/v1/apikeys`` on the real token app over real mTLS: the catalog, the grant and the egress report for the peer
SVID's SPIFFE ID only, every answer ``no-store``, refusals as ``{error, error_description}`` with 401/403/404/400,
and the secret in no error body and no log line at DEBUG."""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from broker._sealing import Kek, KekRing
from broker.apikeys.decision import GrantDecider
from broker.apikeys.grant import (
    EgressRefusal,
    EgressReport,
    UseCount,
    catalog_from_wire,
    grant_from_wire,
    report_to_wire,
)
from broker.apikeys.registry import Amendment, ApiKeyRegistry
from broker.apikeys.rules import GovernanceRules
from broker.apikeys.usage import UsageRecorder
from broker.audit.trail import AuditTrail
from broker.devtools.devca import DevCA
from broker.events.revocations import RevocationIndex, SubjectPattern
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.context import server_ssl_context
from broker.server.apikeys import ApiKeyService, add_apikey_routes
from broker.server.app import build_token_app
from broker.store import latest_version
from broker.store.memory import MemoryStore
from broker.testing import ManualClock
from broker.tokens.keys import FileKeyStore
from broker.tokens.policy import FilePolicyStore
from broker.web import HardenedAppRunner, start_tcp_site
from tests.unit.apikeys.conftest import ADMIN, CANARY, T_START, RecordingLog, sample
from tests.unit.server.token_service_helpers import CLIENT_ID, ISSUER, Reply, client_context, request

OTHER_ID = SpiffeId.parse("spiffe://example.org/ns/billing/sa/api")


@dataclass
class Service:
    url: str
    store: MemoryStore
    trail: AuditTrail
    registry: ApiKeyRegistry
    usage: UsageRecorder
    clock: ManualClock

    async def events(self, name: str) -> list[dict[str, Any]]:
        await self.trail.flush()
        return [json.loads(r.body) for r in await self.store.audit.read(1, 1000) if r.event == name]


@pytest.fixture
async def service(source: InMemorySvidSource, policy_path: Path, state_dir: Path) -> AsyncIterator[Service]:
    store, clock, keks = MemoryStore(latest_version()), ManualClock(T_START.timestamp()), KekRing(Kek.generate())
    app = build_token_app(source=source, policy_store=FilePolicyStore(policy_path), key_store=FileKeyStore(state_dir),
                          issuer=ISSUER)  # fmt: skip
    async with AuditTrail(store.audit, batch_window=0.001) as trail:
        rules = GovernanceRules()
        registry = ApiKeyRegistry(store.apikeys, RecordingLog(), trail, keks, rules, clock=clock)
        decider = GrantDecider(store.apikeys, keks, rules, RevocationIndex(), trail, clock=clock)
        usage = UsageRecorder(store.apikeys, trail, flush_interval=0, clock=clock)
        add_apikey_routes(app, ApiKeyService(decider, usage))
        await registry.add(sample(), CANARY, ADMIN)
        runner = HardenedAppRunner(app, auto_decompress=False)
        await runner.setup()
        ssl_context = server_ssl_context(source, require_client_cert=False)
        try:
            port = await start_tcp_site(runner, "127.0.0.1", 0, ssl_context=ssl_context)
            yield Service(f"https://127.0.0.1:{port}", store, trail, registry, usage, clock)
        finally:
            await runner.cleanup()
            ssl_context.detach()


@pytest.fixture
def web(ca: DevCA) -> ssl.SSLContext:
    return client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)


def _no_store(reply: Reply) -> None:
    assert reply.headers["Cache-Control"] == "no-store"


async def test_the_catalog_lists_the_callers_usable_exceptions_without_a_secret(
    service: Service, web: ssl.SSLContext
) -> None:
    reply = await request(web, "GET", f"{service.url}/v1/apikeys")
    assert reply.status == 200, reply.body
    _no_store(reply)
    catalog = catalog_from_wire(reply.body)
    assert [(e.name, e.placeholder) for e in catalog.entries] == [("stripe", "spiffe-broker:exception/stripe")]
    assert CANARY.decode() not in json.dumps(reply.body)


async def test_a_grant_answers_the_secret_to_an_allowed_svid_and_is_audited(
    service: Service, web: ssl.SSLContext
) -> None:
    reply = await request(web, "POST", f"{service.url}/v1/apikeys/stripe/grant")
    assert reply.status == 200, reply.body
    _no_store(reply)
    grant = grant_from_wire(reply.body)
    assert (grant.secret, grant.version) == (CANARY.decode(), 1)
    assert grant.hold_until == datetime.fromtimestamp(service.clock() + 60, UTC)
    assert await service.events("apikey.granted") == [
        {"spiffe_id": str(CLIENT_ID), "name": "stripe", "version": 1, "hold_until": int(service.clock() + 60)}
    ]


async def test_an_empty_json_object_is_a_grant_request_too(service: Service, web: ssl.SSLContext) -> None:
    reply = await request(web, "POST", f"{service.url}/v1/apikeys/stripe/grant", json_body={})
    assert reply.status == 200, reply.body


REFUSALS = [
    ("no client certificate", None, "POST", "/v1/apikeys/stripe/grant", {}, 401, "invalid_client"),
    ("not an allowed SPIFFE ID", OTHER_ID, "POST", "/v1/apikeys/stripe/grant", {}, 403, "access_denied"),
    ("an unknown exception", CLIENT_ID, "POST", "/v1/apikeys/nope/grant", {}, 404, "not_found"),
    ("a grant with a body", CLIENT_ID, "POST", "/v1/apikeys/stripe/grant", {"data": b"version=2"}, 400,
     "invalid_request"),
    ("a query string", CLIENT_ID, "POST", "/v1/apikeys/stripe/grant?version=1", {}, 400, "invalid_request"),
    ("a catalog with no certificate", None, "GET", "/v1/apikeys", {}, 401, "invalid_client"),
    ("a report that is not a report", CLIENT_ID, "POST", "/v1/apikeys/report", {"json_body": {"uses": []}}, 400,
     "invalid_request"),
    ("a report that is not JSON", CLIENT_ID, "POST", "/v1/apikeys/report", {"data": b"uses=1"}, 400,
     "invalid_request"),
]  # fmt: skip


@pytest.mark.parametrize(("caller", "method", "path", "extra", "status", "error"), [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])  # fmt: skip
async def test_a_refusal_is_an_error_object_with_its_status_and_never_the_secret(
    service: Service, ca: DevCA, caller: SpiffeId | None, method: str, path: str, extra: dict[str, Any],
    status: int, error: str,
) -> None:  # fmt: skip
    context = client_context(None if caller is None else ca.issue_x509_svid(caller, ttl=600), ca)
    reply = await request(context, method, f"{service.url}{path}", **extra)
    assert (reply.status, reply.body["error"]) == (status, error), reply.body
    assert set(reply.body) <= {"error", "error_description"}
    _no_store(reply)
    assert CANARY.decode() not in json.dumps(reply.body)


async def test_a_suspended_exception_is_refused_with_its_status_and_withdrawn(
    service: Service, web: ssl.SSLContext
) -> None:
    await service.registry.suspend("stripe", "investigating SEC-1301", ADMIN)
    reply = await request(web, "POST", f"{service.url}/v1/apikeys/stripe/grant")
    assert (reply.status, reply.body) == (403, {"error": "access_denied",
                                                "error_description": "the exception is suspended"})  # fmt: skip
    assert (await request(web, "GET", f"{service.url}/v1/apikeys")).body == {"apikeys": []}
    refused = await service.events("apikey.refused")
    assert refused[-1]["reason"] == "suspended"


async def test_a_report_records_uses_for_the_reporter_and_audits_a_suspected_exfiltration(
    service: Service, web: ssl.SSLContext
) -> None:
    now = datetime.fromtimestamp(service.clock(), UTC)
    report = EgressReport(
        uses=(UseCount("stripe", 1, "https://api.stripe.com:443", 7, now),),
        refusals=(EgressRefusal("stripe", "https://paste.example.net:443/", "placeholder_to_other_target", now),),
    )
    reply = await request(web, "POST", f"{service.url}/v1/apikeys/report", json_body=report_to_wire(report))
    assert reply.status == 204, reply.body
    assert reply.headers["Cache-Control"] == "no-store"
    await service.usage.flush()
    [use] = await service.store.apikeys.uses("stripe")
    assert (use.spiffe_id, use.count) == (str(CLIENT_ID), 7)
    [refusal] = await service.events("apikey.egress_refused")
    assert refusal["suspected_exfiltration"] and refusal["spiffe_id"] == str(CLIENT_ID)


async def test_no_secret_reaches_any_log_line_at_debug(
    service: Service, web: ssl.SSLContext, ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    other = client_context(ca.issue_x509_svid(OTHER_ID, ttl=600), ca)
    assert (await request(web, "POST", f"{service.url}/v1/apikeys/stripe/grant")).status == 200
    assert (await request(other, "POST", f"{service.url}/v1/apikeys/stripe/grant")).status == 403
    assert (await request(web, "GET", f"{service.url}/v1/apikeys")).status == 200
    await service.registry.update("stripe", Amendment(allowed=(SubjectPattern.parse(str(OTHER_ID)),)), ADMIN)
    assert CANARY.decode() not in caplog.text
    assert "/v1/apikeys/{name}/grant" in caplog.text  # the access log names the route, not the path
