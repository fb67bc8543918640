"""Who may call the admin API: an X.509-SVID verified per trust domain whose SPIFFE ID is an admin, exactly.

Every refusal is audited (``refused``) before it is answered, and changes nothing.
"""

from __future__ import annotations

import aiohttp
import pytest

from broker.devtools.devca import DevCA
from broker.testing.forged import forged_svid
from tests.unit.admin.conftest import ADMIN_ID, FOREIGN_ADMIN_ID, WORKLOAD_ID, AdminService
from tests.unit.admin.fakes import Recorded
from tests.unit.server.token_service_helpers import client_context, request

ENDPOINTS = [
    ("GET", "/admin/v1/keys"),
    ("POST", "/admin/v1/keys/rotate"),
    ("POST", "/admin/v1/keys/k-live/revoke"),
    ("GET", "/admin/v1/store"),
    ("GET", "/admin/v1/audit"),
    ("GET", "/admin/v1/nothing-here"),
    ("GET", "/admin/v1"),
]
IDS = [f"{m} {p}" for m, p in ENDPOINTS]


def _nothing_done(service: AdminService) -> None:
    assert service.keys.revoked == [] and service.keys.rotations == 0
    assert service.reader.queries == []


async def test_admin_lists_keys_and_the_call_is_audited(admin_service: AdminService, ca: DevCA) -> None:
    ctx = client_context(ca.issue_x509_svid(ADMIN_ID, ttl=600), ca)
    reply = await request(ctx, "GET", f"{admin_service.url}/admin/v1/keys")
    assert reply.status == 200
    assert [k["kid"] for k in reply.body["keys"]] == ["k-old", "k-live", "k-gone"]
    assert reply.headers["Cache-Control"] == "no-store"
    assert admin_service.audit.records == [Recorded(str(ADMIN_ID), "GET", "/admin/v1/keys", "served", {"keys": 3})]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS, ids=IDS)
async def test_no_client_certificate_is_401_audited_and_changes_nothing(
    admin_service: AdminService, ca: DevCA, method: str, path: str
) -> None:
    reply = await request(client_context(None, ca), method, f"{admin_service.url}{path}", json_body={})
    assert reply.status == 401
    assert reply.body["error"] == "invalid_client"
    assert "no client certificate" in reply.body["error_description"]
    assert reply.headers["WWW-Authenticate"] == 'TLS realm="spiffe-broker"'
    [record] = admin_service.audit.records
    assert (record.actor, record.method, record.outcome) == (None, method, "refused")
    assert record.detail == {"error": "invalid_client", "status": 401}
    _nothing_done(admin_service)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS, ids=IDS)
async def test_workload_that_is_not_an_admin_is_403_audited_with_its_id(
    admin_service: AdminService, ca: DevCA, method: str, path: str
) -> None:
    ctx = client_context(ca.issue_x509_svid(WORKLOAD_ID, ttl=600), ca)
    reply = await request(ctx, method, f"{admin_service.url}{path}", json_body={})
    assert reply.status == 403
    assert reply.body["error"] == "access_denied"
    [record] = admin_service.audit.records
    assert (record.actor, record.outcome, record.detail["status"]) == (str(WORKLOAD_ID), "refused", 403)
    _nothing_done(admin_service)


async def test_admin_path_in_a_federated_trust_domain_is_not_an_admin(
    admin_service: AdminService, ca: DevCA, other_ca: DevCA
) -> None:
    ctx = client_context(other_ca.issue_x509_svid(FOREIGN_ADMIN_ID, ttl=600), ca)
    reply = await request(ctx, "POST", f"{admin_service.url}/admin/v1/keys/k-live/revoke", json_body={})
    assert reply.status == 403
    assert admin_service.audit.outcomes() == ["refused"]
    assert admin_service.audit.records[0].actor == str(FOREIGN_ADMIN_ID)
    _nothing_done(admin_service)


async def test_admin_id_signed_by_another_trust_domains_ca_is_401(
    admin_service: AdminService, ca: DevCA, other_ca: DevCA
) -> None:
    """other.org's CA passes the handshake (its bundle is loaded) but cannot vouch for an example.org ID."""
    ctx = client_context(forged_svid(other_ca, str(ADMIN_ID)), ca)
    reply = await request(ctx, "POST", f"{admin_service.url}/admin/v1/keys/k-live/revoke", json_body={})
    assert reply.status == 401
    assert "not an acceptable X.509-SVID" in reply.body["error_description"]
    assert [(r.actor, r.outcome) for r in admin_service.audit.records] == [(None, "refused")]
    _nothing_done(admin_service)


async def test_certificate_from_an_unknown_ca_fails_the_handshake(admin_service: AdminService, ca: DevCA) -> None:
    stranger = DevCA.ephemeral("example.org")  # same trust domain name, a CA the broker does not trust
    ctx = client_context(stranger.issue_x509_svid(ADMIN_ID, ttl=600), ca)
    with pytest.raises(aiohttp.ClientError):
        await request(ctx, "GET", f"{admin_service.url}/admin/v1/keys")
    _nothing_done(admin_service)


async def test_unknown_admin_path_is_404_and_wrong_method_405_after_authentication(
    admin_service: AdminService, ca: DevCA
) -> None:
    ctx = client_context(ca.issue_x509_svid(ADMIN_ID, ttl=600), ca)
    missing = await request(ctx, "GET", f"{admin_service.url}/admin/v1/nothing-here")
    wrong = await request(ctx, "GET", f"{admin_service.url}/admin/v1/keys/rotate")
    assert (missing.status, missing.body["error"]) == (404, "not_found")
    assert (wrong.status, wrong.body["error"], wrong.headers["Allow"]) == (405, "method_not_allowed", "POST")
    assert [(r.path, r.outcome, r.detail["status"]) for r in admin_service.audit.records] == [
        ("/admin/v1/*", "refused", 404),
        ("/admin/v1/*", "refused", 405),
    ]


async def test_public_token_service_routes_stay_public(admin_service: AdminService, ca: DevCA) -> None:
    reply = await request(client_context(None, ca), "GET", f"{admin_service.url}/jwks.json")
    assert reply.status == 200
    assert admin_service.audit.records == []
