"""``/revoke`` (RFC 7009) and ``/introspect`` (RFC 7662) on a running stateful token service (real TLS on loopback,
the in-memory store twin), the quarantine hook at ``/token``, readiness and the RFC 8414 metadata."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from broker._sealing import generate_kek_file
from broker.config import load_settings
from broker.devtools.devca import DevCA
from broker.events.revocations import KeyRevoked, SubjectPattern, SubjectQuarantined
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.server.handlers import advertise
from broker.server.state import CONFIG, METADATA_MEMBERS
from broker.server.stateful_service import StatefulTokenService, start_stateful_token_service
from broker.testing.policy import policy_rule, policy_yaml
from broker.tokens.policy import FilePolicyStore
from tests.unit.server.token_service_helpers import API, BROKER_ID, CLIENT_ID, ISSUER, client_context, request

RS_ID = SpiffeId.parse("spiffe://example.org/ns/shop/sa/orders-api")
ADMIN_ID = SpiffeId.parse("spiffe://example.org/ops/admin")
OTHER_ID = SpiffeId.parse("spiffe://example.org/ns/shop/sa/other")
TOKEN_FORM = {"grant_type": "client_credentials", "audience": API, "scope": "orders:read"}


@dataclass
class Running:
    service: StatefulTokenService
    ca: DevCA

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.service.port}"

    def ctx(self, spiffe_id: SpiffeId | None) -> ssl.SSLContext:
        svid = None if spiffe_id is None else self.ca.issue_x509_svid(spiffe_id, ttl=600)
        return client_context(svid, self.ca)

    async def token(self) -> str:
        reply = await request(self.ctx(CLIENT_ID), "POST", f"{self.url}/token", data=TOKEN_FORM)
        assert reply.status == 200, reply.body
        token: str = reply.body["access_token"]
        return token

    async def post(self, path: str, caller: SpiffeId | None, form: dict[str, str]) -> Any:
        return await request(self.ctx(caller), "POST", f"{self.url}{path}", data=form)

    async def audit(self, event: str) -> list[dict[str, Any]]:
        await self.service.state.recorder.flush()
        records = await self.service.state.store.audit.read(1, 1000)
        return [json.loads(r.body) for r in records if r.event == event]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    ca = DevCA.ephemeral("example.org")
    (tmp_path / "policy.yaml").write_text(
        policy_yaml(policy_rule(spiffe_id=CLIENT_ID), policy_rule(spiffe_id=OTHER_ID))
    )
    generate_kek_file(tmp_path / "kek")
    settings = load_settings(
        None,
        {
            "state_dir": tmp_path / "state",
            "store": {"url": "memory:"},
            "keyring": {"kek_file": tmp_path / "kek"},
            "ledger": {"batch_window": 0.01},
            "admin": {"spiffe_ids": [str(ADMIN_ID)]},
            "introspection": {"spiffe_ids": [str(RS_ID)]},
        },
    )
    service = await start_stateful_token_service(
        settings,
        source=InMemorySvidSource(ca, BROKER_ID),
        policy_store=FilePolicyStore(tmp_path / "policy.yaml"),
        issuer=ISSUER,
        listen_host="127.0.0.1",
        listen_port=0,
        health_port=0,
    )
    try:
        yield Running(service, ca)
    finally:
        await service.aclose()


async def test_metadata_advertises_both_endpoints_with_the_token_endpoints_auth_method(running: Running) -> None:
    reply = await request(running.ctx(None), "GET", f"{running.url}/.well-known/oauth-authorization-server")
    assert reply.body["revocation_endpoint"] == f"{ISSUER}/revoke"
    assert reply.body["introspection_endpoint"] == f"{ISSUER}/introspect"
    assert reply.body["revocation_endpoint_auth_methods_supported"] == ["tls_client_auth"]
    assert reply.body["introspection_endpoint_auth_methods_supported"] == ["tls_client_auth"]
    # the token endpoint also takes assertions (the stateful service wires them); /revoke and /introspect do not
    assert reply.body["token_endpoint_auth_methods_supported"] == ["tls_client_auth", "spiffe_jwt", "private_key_jwt"]


async def test_introspect_then_revoke_then_introspect_reports_the_token_inactive_at_once(running: Running) -> None:
    token = await running.token()
    active = await running.post("/introspect", RS_ID, {"token": token})
    assert active.status == 200 and active.headers["Cache-Control"] == "no-store"
    assert active.headers["Content-Type"].startswith("application/json")
    body = active.body
    assert body["active"] is True and body["sub"] == body["client_id"] == str(CLIENT_ID)
    assert (body["aud"], body["iss"], body["scope"], body["token_type"]) == (API, ISSUER, "orders:read", "Bearer")
    assert set(body) == {"active", "scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti", "token_type", "cnf"}
    revoked = await running.post("/revoke", CLIENT_ID, {"token": token, "token_type_hint": "access_token"})
    assert (revoked.status, revoked.headers["Content-Length"], revoked.headers["Cache-Control"]) == (
        200,
        "0",
        "no-store",
    )
    assert (await running.post("/introspect", RS_ID, {"token": token})).body == {"active": False}
    again = await running.post("/revoke", CLIENT_ID, {"token": token})
    assert again.status == 200
    entries = (await running.service.state.store.revocations.read(0)).entries
    assert len(entries) == 1, "already revoked: no second entry"
    audited = await running.audit("token.revoked")
    assert [(a["jti"], a["by"], a["actor"]) for a in audited] == [(body["jti"], "client", str(CLIENT_ID))]


async def test_another_clients_token_is_refused_invalid_grant_and_an_admin_revokes_it(running: Running) -> None:
    token = await running.token()
    refused = await running.post("/revoke", OTHER_ID, {"token": token})
    assert (refused.status, refused.body["error"]) == (400, "invalid_grant")
    assert (await running.post("/introspect", RS_ID, {"token": token})).body["active"] is True
    assert (await running.post("/revoke", ADMIN_ID, {"token": token})).status == 200
    assert (await running.post("/introspect", RS_ID, {"token": token})).body == {"active": False}
    assert [a["by"] for a in await running.audit("token.revoked")] == ["admin"]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("garbage", id="malformed"),
        pytest.param("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", id="forged"),
    ],
)
async def test_a_token_that_does_not_verify_is_200_at_revoke_and_only_inactive_at_introspect(
    running: Running, bad: str
) -> None:
    assert (await running.post("/revoke", CLIENT_ID, {"token": bad})).status == 200
    assert (await running.post("/introspect", RS_ID, {"token": bad})).body == {"active": False}
    assert (await running.service.state.store.revocations.read(0)).entries == ()


async def test_callers_without_a_certificate_get_401_and_callers_off_the_allow_list_403(running: Running) -> None:
    token = await running.token()
    for path in ("/revoke", "/introspect"):
        reply = await running.post(path, None, {"token": token})
        assert (reply.status, reply.body["error"]) == (401, "invalid_client")
        assert reply.headers["WWW-Authenticate"] == 'TLS realm="spiffe-broker"'
    denied = await running.post("/introspect", CLIENT_ID, {"token": token})
    assert (denied.status, denied.body["error"]) == (403, "access_denied")
    missing = await running.post("/introspect", RS_ID, {})
    assert (missing.status, missing.body["error"]) == (400, "invalid_request")


async def test_a_quarantine_refuses_token_requests_and_cuts_off_live_tokens(running: Running) -> None:
    token = await running.token()
    now = datetime.now(UTC)
    pattern = SubjectPattern.parse(str(CLIENT_ID))
    quarantined = SubjectQuarantined(pattern, now, None, now + timedelta(minutes=5), reason="laptop stolen")
    await running.service.state.store.revocations.append([quarantined])  # as another replica would
    assert (await running.post("/introspect", RS_ID, {"token": token})).body == {"active": False}
    refused = await running.post("/token", CLIENT_ID, TOKEN_FORM)
    assert (refused.status, refused.body["error"]) == (403, "access_denied")
    assert "laptop" not in json.dumps(refused.body)
    audited = await running.audit("token.refused")
    assert [(a["error"], a["reason"], a["spiffe_id"]) for a in audited][-1:] == [
        ("access_denied", "quarantined", str(CLIENT_ID))
    ]
    other = await running.post("/token", OTHER_ID, TOKEN_FORM)
    assert other.status == 200, "another SPIFFE ID is not affected"


async def test_a_token_signed_by_a_key_revoked_on_the_log_is_inactive(running: Running) -> None:
    token = await running.token()
    kid = running.service.state.keyring.active_key().kid
    expires = datetime.now(UTC) + timedelta(hours=1)
    await running.service.state.store.revocations.append([KeyRevoked(kid, expires)])
    assert (await running.post("/introspect", RS_ID, {"token": token})).body == {"active": False}


async def test_an_index_not_confirmed_for_too_long_makes_the_service_unready_and_token_requests_fail_closed(
    running: Running,
) -> None:
    health = f"http://127.0.0.1:{running.service.health_port}/readyz"
    assert (await request(running.ctx(None), "GET", health)).status == 200
    revocations = running.service.revocations
    assert revocations is not None
    revocations.max_unconfirmed = -1.0  # as if the store had not been read for longer than allowed
    unready = await request(running.ctx(None), "GET", health)
    assert unready.status == 503 and "revocation log has not been confirmed" in unready.body["reason"]
    refused = await running.post("/token", CLIENT_ID, TOKEN_FORM)
    assert (refused.status, refused.body["error"]) == (503, "temporarily_unavailable")


async def test_a_metadata_member_cannot_be_advertised_twice_or_replace_a_base_member(running: Running) -> None:
    app = web.Application()
    app[CONFIG], app[METADATA_MEMBERS] = running.service.app[CONFIG], {}
    advertise(app, {"spiffe_broker_revocation_feed_endpoint": f"{ISSUER}/v1/revocations"})
    for members in ({"spiffe_broker_revocation_feed_endpoint": "x"}, {"token_endpoint": "x"}):
        with pytest.raises(ValueError, match="already advertised"):
            advertise(app, members)
    assert app[METADATA_MEMBERS] == {"spiffe_broker_revocation_feed_endpoint": f"{ISSUER}/v1/revocations"}
