"""``GET /admin/v1/clock-drift`` over real TLS on a real :class:`DriftTracker`: worst first, this replica's only,
``limit`` checked strictly, open to admins only, and every call audited."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from broker.admin.app import add_admin_routes
from broker.admin.client import AdminClient
from broker.admin.clock_drift import ClockDrift, clock_drift_document, decode_clock_drift
from broker.admin.wire import WireError
from broker.devtools.devca import DevCA
from broker.errors import InvalidRequestError
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffetls.context import SourceSSLContext, server_ssl_context
from broker.tokens.drift import DriftReport, DriftSource, DriftTracker
from broker.web import HardenedAppRunner, start_tcp_site
from tests.unit.admin.conftest import ADMIN_ID, WORKLOAD_ID, AdminService
from tests.unit.admin.fakes import FakeAuditReader, FakeKeyAdmin, FakeStoreInfo, RecordingAudit
from tests.unit.server.token_service_helpers import client_context, request

AHEAD = "spiffe://example.org/ns/shop/sa/ahead"  # its clock runs 7 s ahead: iat in the server's future
BEHIND = "orders-batch"  # a registered client_id, 3 s behind
SYNCED = "spiffe://example.org/ns/shop/sa/synced"
NOW = 1_767_225_600.0
REPLICA = "broker-0"


def tracker() -> DriftTracker:
    drift = DriftTracker(leeway=10.0)
    for n, skew in enumerate((-6.5, -7.0, -7.5)):
        drift.record(AHEAD, DriftSource.ASSERTION, now=NOW + n, iat=NOW + n - skew)
    drift.record(BEHIND, DriftSource.DPOP, now=NOW, iat=NOW - 3.0)
    drift.record(SYNCED, DriftSource.ASSERTION, now=NOW, iat=NOW - 0.25)
    return drift


@dataclass
class DriftApi:
    url: str
    audit: RecordingAudit


@pytest.fixture
async def api(source: InMemorySvidSource) -> AsyncIterator[DriftApi]:
    app, audit = web.Application(), RecordingAudit()
    add_admin_routes(app, admins=frozenset({ADMIN_ID}), bundles=source.x509_bundles, keys=FakeKeyAdmin(),
                     store=FakeStoreInfo(), audit_reader=FakeAuditReader([]), audit=audit, drift=tracker(),
                     replica=REPLICA)  # fmt: skip
    ssl_context = server_ssl_context(source, require_client_cert=False)
    runner = HardenedAppRunner(app, auto_decompress=False)
    await runner.setup()
    try:
        port = await start_tcp_site(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        yield DriftApi(f"https://127.0.0.1:{port}", audit)
    finally:
        await runner.cleanup()
        ssl_context.detach()


@pytest.fixture
async def client(api: DriftApi, admin_context: SourceSSLContext) -> AsyncIterator[AdminClient]:
    async with AdminClient(api.url, admin_context) as admin:
        yield admin


@pytest.fixture
def admin_tls(ca: DevCA) -> ssl.SSLContext:
    return client_context(ca.issue_x509_svid(ADMIN_ID, ttl=600), ca)


async def test_the_worst_drifts_come_first_named_by_replica_and_audited(
    api: DriftApi, admin_tls: ssl.SSLContext
) -> None:
    reply = await request(admin_tls, "GET", f"{api.url}/admin/v1/clock-drift")
    assert (reply.status, reply.headers["Cache-Control"]) == (200, "no-store")
    body: dict[str, Any] = reply.body
    assert {k: v for k, v in body.items() if k != "clients"} == {
        "leeway_seconds": 10.0, "warn_above_seconds": 5.0, "replica": REPLICA, "scope": "replica",
    }  # fmt: skip
    assert [(c["client"], c["source"]) for c in body["clients"]] == [
        (AHEAD, "client_assertion"), (BEHIND, "dpop_proof"), (SYNCED, "client_assertion"),
    ]  # fmt: skip
    assert body["clients"][0] == {"client": AHEAD, "source": "client_assertion", "samples": 3, "drift_seconds": -7.0,
                                  "median_seconds": -7.0,
                                  "min_seconds": -7.5, "max_seconds": -6.5, "last_seen": NOW + 2}  # fmt: skip
    [record] = api.audit.records
    assert (record.actor, record.path, record.outcome) == (str(ADMIN_ID), "/admin/v1/clock-drift", "served")
    assert record.detail == {"limit": 10, "clients": 3}


async def test_the_client_decodes_the_answer_and_limit_keeps_the_worst(api: DriftApi, client: AdminClient) -> None:
    drift = await client.clock_drift(limit=1)
    assert (drift.leeway, drift.replica, drift.warn_above) == (10.0, REPLICA, 5.0)
    [worst] = drift.clients
    assert worst == DriftReport(AHEAD, DriftSource.ASSERTION, 3, -7.0, -7.5, -6.5, NOW + 2)
    assert drift.drifting(worst)
    assert api.audit.records[0].detail == {"limit": 1, "clients": 1}
    assert len((await client.clock_drift(limit=100)).clients) == 3


BAD_QUERIES = [
    ("zero", "limit=0"),
    ("above 100", "limit=101"),
    ("negative", "limit=-1"),
    ("empty", "limit="),
    ("not a number", "limit=ten"),
    ("a fraction", "limit=1.5"),
    ("non-ASCII digits", "limit=%D9%A3"),
    ("long", "limit=0000000001"),
]


@pytest.mark.parametrize("query", [q for _, q in BAD_QUERIES], ids=[name for name, _ in BAD_QUERIES])
async def test_a_bad_limit_is_invalid_request_and_audited_refused(
    api: DriftApi, admin_tls: ssl.SSLContext, query: str
) -> None:
    reply = await request(admin_tls, "GET", f"{api.url}/admin/v1/clock-drift?{query}")
    assert (reply.status, reply.body["error"]) == (400, "invalid_request")
    assert reply.body["error_description"] == "limit must be a whole number from 1 to 100"
    assert [(r.outcome, r.detail) for r in api.audit.records] == [
        ("refused", {"error": "invalid_request", "status": 400})
    ]


@pytest.mark.parametrize(
    ("query", "says"),
    [("limit=1&limit=2", "given more than once"), ("client=x", "does not take (it takes: limit)")],
    ids=["repeated", "unknown parameter"],
)
async def test_other_bad_queries_are_invalid_request(
    api: DriftApi, admin_tls: ssl.SSLContext, query: str, says: str
) -> None:
    reply = await request(admin_tls, "GET", f"{api.url}/admin/v1/clock-drift?{query}")
    assert (reply.status, reply.body["error"]) == (400, "invalid_request")
    assert says in reply.body["error_description"]


async def test_the_client_maps_a_refused_limit_to_invalid_request(client: AdminClient) -> None:
    with pytest.raises(InvalidRequestError, match="limit must be a whole number from 1 to 100"):
        await client.clock_drift(limit=0)


async def test_without_a_certificate_401_and_a_workload_403_both_audited_and_nothing_disclosed(
    api: DriftApi, ca: DevCA
) -> None:
    anonymous = await request(client_context(None, ca), "GET", f"{api.url}/admin/v1/clock-drift")
    workload = client_context(ca.issue_x509_svid(WORKLOAD_ID, ttl=600), ca)
    denied = await request(workload, "GET", f"{api.url}/admin/v1/clock-drift")
    assert (anonymous.status, anonymous.body["error"]) == (401, "invalid_client")
    assert (denied.status, denied.body["error"]) == (403, "access_denied")
    assert AHEAD not in str(anonymous.body) + str(denied.body)
    assert [(r.actor, r.outcome) for r in api.audit.records] == [(None, "refused"), (str(WORKLOAD_ID), "refused")]


async def test_it_is_a_read_only_endpoint(api: DriftApi, admin_tls: ssl.SSLContext) -> None:
    reply = await request(admin_tls, "POST", f"{api.url}/admin/v1/clock-drift", json_body={})
    assert (reply.status, reply.body["error"], reply.headers["Allow"]) == (405, "method_not_allowed", "GET")


async def test_without_a_tracker_the_route_is_not_mounted(admin_service: AdminService, ca: DevCA) -> None:
    admin = client_context(ca.issue_x509_svid(ADMIN_ID, ttl=600), ca)
    reply = await request(admin, "GET", f"{admin_service.url}/admin/v1/clock-drift")
    assert (reply.status, reply.body["error"]) == (404, "not_found")


def test_an_empty_tracker_answers_no_clients() -> None:
    document = clock_drift_document(ClockDrift(10.0, None, tuple(DriftTracker(leeway=10.0).worst())))
    assert document == {"leeway_seconds": 10.0, "warn_above_seconds": 5.0, "replica": None, "scope": "replica",
                        "clients": []}  # fmt: skip
    assert decode_clock_drift(document) == ClockDrift(10.0, None, ())


def test_answers_of_another_shape_are_refused() -> None:
    good = clock_drift_document(ClockDrift(10.0, REPLICA, tuple(tracker().worst())))
    assert decode_clock_drift(good).clients[0].client == AHEAD
    item = good["clients"][0]
    bad: list[tuple[dict[str, Any], str]] = [
        ({**good, "scope": "cluster"}, "'scope'"),
        ({**good, "leeway_seconds": "10"}, "'leeway_seconds'"),
        ({**good, "replica": 7}, "'replica'"),
        ({**good, "clients": {}}, "'clients'"),
        ({**good, "clients": [{**item, "source": "mtls"}]}, "'source' is not a drift source"),
        ({**good, "clients": [{**item, "samples": True}]}, "'samples'"),
        ({**good, "clients": [{**item, "median_seconds": None}]}, "'median_seconds'"),
        ({**good, "clients": ["x"]}, "not a list of objects"),
    ]
    for document, says in bad:
        with pytest.raises(WireError, match=says):
            decode_clock_drift(document)
