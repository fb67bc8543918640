"""The quarantine routes over real TLS, with the real service over the memory store: every bad input gets its own
code, is audited ``refused`` and leaves the revocation log and the audit journal as they were."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web

from broker.admin.app import add_admin_routes
from broker.admin.client import AdminClient
from broker.admin.wire import WireError, decode_quarantine_added, decode_quarantines
from broker.devtools.devca import DevCA
from broker.errors import InvalidRequestError, OAuthError
from broker.events.revocations import SubjectPattern, SubjectQuarantined, TokenRevoked
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffetls.context import SourceSSLContext, server_ssl_context
from broker.store import latest_version
from broker.store.memory import MemoryStore
from broker.testing import ManualClock
from broker.tokens.quarantine import (
    InvalidPatternError,
    InvalidReasonError,
    InvalidUntilError,
    NotQuarantinedError,
    WholeTrustDomainError,
)
from broker.web import HardenedAppRunner, start_tcp_site
from tests.unit.admin.conftest import ADMIN_ID
from tests.unit.admin.fakes import FakeAuditReader, FakeKeyAdmin, FakeStoreInfo, RecordingAudit
from tests.unit.server.token_service_helpers import client_context, request
from tests.unit.tokens.quarantine_helpers import START, WEB, WINDOW, LiveLedger, at, entry, service

SHOP = "spiffe://example.org/ns/shop/*"


@dataclass
class QuarantineApi:
    url: str
    store: MemoryStore
    ledger: LiveLedger
    clock: ManualClock
    audit: RecordingAudit

    async def log(self) -> tuple[object, ...]:
        return tuple(e.event for e in (await self.store.revocations.read(0)).entries)

    async def journal(self) -> list[tuple[str, dict[str, Any]]]:
        return [(r.event, json.loads(r.body)) for r in await self.store.audit.read(1, 100)]


@pytest.fixture
async def api(source: InMemorySvidSource) -> AsyncIterator[QuarantineApi]:
    store, ledger, clock, audit = MemoryStore(latest_version()), LiveLedger(), ManualClock(START), RecordingAudit()
    await ledger.record([entry("jti-web", WEB, at(clock, -10)), entry("jti-gone", WEB, at(clock, -900))])
    app = web.Application()
    add_admin_routes(app, admins=frozenset({ADMIN_ID}), bundles=source.x509_bundles, keys=FakeKeyAdmin(),
                     store=FakeStoreInfo(), audit_reader=FakeAuditReader([]), audit=audit,
                     quarantines=service(store, ledger, clock))  # fmt: skip
    ssl_context = server_ssl_context(source, require_client_cert=False)
    runner = HardenedAppRunner(app, auto_decompress=False)
    await runner.setup()
    try:
        port = await start_tcp_site(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        yield QuarantineApi(f"https://127.0.0.1:{port}", store, ledger, clock, audit)
    finally:
        await runner.cleanup()
        ssl_context.detach()


@pytest.fixture
async def client(api: QuarantineApi, admin_context: SourceSSLContext) -> AsyncIterator[AdminClient]:
    async with AdminClient(api.url, admin_context) as admin:
        yield admin


@pytest.fixture
def admin_tls(ca: DevCA) -> ssl.SSLContext:
    return client_context(ca.issue_x509_svid(ADMIN_ID, ttl=600), ca)


async def test_add_list_and_release_round_trip_audited_under_the_caller(
    api: QuarantineApi, client: AdminClient
) -> None:
    change = await client.quarantine(SHOP, reason="incident 42", until="30m")
    now = at(api.clock)
    expected = SubjectQuarantined(SubjectPattern.parse(SHOP), now, now + timedelta(minutes=30), now + WINDOW,
                                  "incident 42")  # fmt: skip
    assert (change.result.quarantine, change.result.live_tokens, change.audited) == (expected, 1, True)
    assert await api.log() == (expected, TokenRevoked("jti-web", at(api.clock, 290)))
    assert await client.quarantines() == [expected]
    api.clock.advance(60)
    released = await client.release_quarantine(SHOP, reason="re-keyed")
    assert (released.result.quarantine, released.result.at, released.result.seq) == (expected, at(api.clock), 3)
    assert await client.quarantines() == []
    assert [(r.path, r.outcome) for r in api.audit.records] == [
        ("/admin/v1/quarantines", "requested"), ("/admin/v1/quarantines", "done"),
        ("/admin/v1/quarantines", "served"), ("/admin/v1/quarantines/release", "requested"),
        ("/admin/v1/quarantines/release", "done"), ("/admin/v1/quarantines", "served"),
    ]  # fmt: skip
    assert api.audit.records[0].detail == {"pattern": SHOP, "reason": "incident 42",
                                           "until": "2027-01-15T08:30:00Z"}  # fmt: skip
    assert api.audit.records[1].detail["live_tokens"] == 1
    assert api.audit.records[3].detail == {"pattern": SHOP, "reason": "re-keyed"}
    assert [(event, body["actor"]) for event, body in await api.journal()] == [
        ("subject.quarantined", str(ADMIN_ID)), ("subject.released", str(ADMIN_ID)),
    ]  # fmt: skip


async def test_the_whole_trust_domain_with_the_flag_is_quarantined(api: QuarantineApi, client: AdminClient) -> None:
    change = await client.quarantine("spiffe://example.org/*", reason="CA compromise", all_of_trust_domain=True)
    assert change.result.quarantine.pattern.text == "spiffe://example.org/*"
    assert change.result.live_tokens == 1


BAD_ADDS: list[tuple[str, dict[str, Any], type[OAuthError], str]] = [
    ("not a SPIFFE ID", {"pattern": "web"}, InvalidPatternError, "is not a SPIFFE ID"),
    ("another scheme", {"pattern": "https://example.org/ns/shop"}, InvalidPatternError, "scheme"),
    ("glob in a segment", {"pattern": "spiffe://example.org/ns/sh*"}, InvalidPatternError, "path segment"),
    ("glob for the trust domain", {"pattern": "spiffe://*"}, InvalidPatternError, "is not a SPIFFE ID"),
    ("a trust domain's ID", {"pattern": "spiffe://example.org"}, InvalidPatternError, "names a trust domain"),
    ("whole trust domain", {"pattern": "spiffe://example.org/*"}, WholeTrustDomainError, "all_of_trust_domain"),
    ("empty reason", {"reason": ""}, InvalidReasonError, "reason must be 1 to 200"),
    ("reason of spaces", {"reason": "  "}, InvalidReasonError, "reason must be 1 to 200"),
    ("reason with a newline", {"reason": "a\nb"}, InvalidReasonError, "no control characters"),
    ("until in the past", {"until": "2020-01-01T00:00:00Z"}, InvalidUntilError, "is not in the future"),
    ("until without an offset", {"until": "2030-01-01T00:00:00"}, InvalidUntilError, "with its offset"),
    ("until of zero", {"until": "0s"}, InvalidUntilError, "or a duration"),
]


@pytest.mark.parametrize(("body", "error", "says"), [b[1:] for b in BAD_ADDS], ids=[b[0] for b in BAD_ADDS])
async def test_a_bad_add_gets_its_own_error_is_audited_refused_and_changes_nothing(
    api: QuarantineApi, client: AdminClient, body: dict[str, Any], error: type[OAuthError], says: str
) -> None:
    call = {"pattern": SHOP, "reason": "incident", **body}
    with pytest.raises(error, match=says) as caught:
        await client.quarantine(call.pop("pattern"), **call)
    assert type(caught.value) is error
    assert await api.log() == () and await api.journal() == [] and api.ledger.asked == []
    assert api.audit.outcomes() == ["refused"]
    assert api.audit.records[0].detail == {"error": error.error, "status": 400}


BAD_TYPES: list[tuple[str, dict[str, Any], str]] = [
    ("no pattern", {"reason": "x"}, "pattern is required"),
    ("no reason", {"pattern": SHOP}, "reason is required"),
    ("pattern not a string", {"pattern": ["spiffe://example.org/a"], "reason": "x"}, "pattern must be a string"),
    ("until not a string", {"pattern": SHOP, "reason": "x", "until": 1800}, "until must be a string"),
    ("flag not a boolean", {"pattern": SHOP, "reason": "x", "all_of_trust_domain": "yes"}, "true or false"),
    ("unknown member", {"pattern": SHOP, "reason": "x", "force": True}, "does not take"),
]


@pytest.mark.parametrize(("body", "says"), [b[1:] for b in BAD_TYPES], ids=[b[0] for b in BAD_TYPES])
async def test_a_member_of_the_wrong_shape_is_invalid_request_and_changes_nothing(
    api: QuarantineApi, admin_tls: ssl.SSLContext, body: dict[str, Any], says: str
) -> None:
    reply = await request(admin_tls, "POST", f"{api.url}/admin/v1/quarantines", json_body=body)
    assert (reply.status, reply.body["error"]) == (400, "invalid_request")
    assert says in reply.body["error_description"]
    assert await api.log() == () and api.audit.outcomes() == ["refused"]


async def test_release_of_a_pattern_not_quarantined_is_404_not_quarantined_and_changes_nothing(
    api: QuarantineApi, client: AdminClient
) -> None:
    await client.quarantine(SHOP, reason="incident")
    log, journal = await api.log(), await api.journal()
    with pytest.raises(NotQuarantinedError, match="quarantine list"):
        await client.release_quarantine(WEB)
    with pytest.raises(InvalidPatternError):
        await client.release_quarantine("spiffe://example.org/ns/shop/")
    assert await api.log() == log and await api.journal() == journal
    assert api.audit.outcomes()[2:] == ["requested", "refused", "refused"]
    assert api.audit.records[3].detail == {"pattern": WEB, "error": "not_quarantined", "status": 404}


async def test_release_takes_the_whole_trust_domain_without_the_flag(api: QuarantineApi, client: AdminClient) -> None:
    await client.quarantine("spiffe://example.org/*", reason="incident", all_of_trust_domain=True)
    released = await client.release_quarantine("spiffe://example.org/*")
    assert released.result.quarantine.pattern.text == "spiffe://example.org/*"


async def test_release_is_a_post_with_the_pattern_in_the_body(api: QuarantineApi, admin_tls: ssl.SSLContext) -> None:
    reply = await request(admin_tls, "GET", f"{api.url}/admin/v1/quarantines/release")
    assert (reply.status, reply.body["error"], reply.headers["Allow"]) == (405, "method_not_allowed", "POST")


def test_answers_of_another_shape_are_refused() -> None:
    item = {"pattern": SHOP, "reason": "", "since": "2030-01-01T00:00:00Z", "until": None,
            "cutoff_until": "2030-01-01T00:11:00Z"}  # fmt: skip
    assert decode_quarantines({"quarantines": [item]})[0].pattern.text == SHOP
    with pytest.raises(WireError, match="'pattern' is not a SPIFFE ID pattern"):
        decode_quarantines({"quarantines": [{**item, "pattern": "web"}]})
    with pytest.raises(WireError, match="'truncated'"):
        decode_quarantine_added({"quarantine": item, "seq": 1, "live_tokens": 1})


async def test_the_codes_map_back_to_their_classes(api: QuarantineApi, client: AdminClient) -> None:
    with pytest.raises(InvalidRequestError) as caught:  # every 400 here is an invalid_request to a generic client
        await client.quarantine("web", reason="x")
    assert caught.value.error == "invalid_pattern"
