"""Every admin call is audited before its answer is sent, and a call the journal does not take is not performed.

Reads: ``served`` after the read, before the answer. Changes: ``requested`` before, then ``done`` or
``refused``. A journal failure is 503 ``audit_unavailable`` and nothing is done or disclosed, except a change
already made, which is reported as made (``"audited": false``).
"""

from __future__ import annotations

import logging
import ssl

import pytest

from broker.devtools.devca import DevCA
from broker.errors import StoreUnavailableError
from tests.unit.admin.conftest import ADMIN_ID, AdminService
from tests.unit.admin.fakes import Recorded
from tests.unit.server.token_service_helpers import client_context, request

READS = ["/admin/v1/keys", "/admin/v1/store", "/admin/v1/audit"]


@pytest.fixture
def admin_tls(ca: DevCA) -> ssl.SSLContext:
    return client_context(ca.issue_x509_svid(ADMIN_ID, ttl=600), ca)


@pytest.mark.parametrize("path", READS)
async def test_read_is_recorded_served_with_its_admin(
    admin_service: AdminService, admin_tls: ssl.SSLContext, path: str
) -> None:
    reply = await request(admin_tls, "GET", f"{admin_service.url}{path}")
    assert reply.status == 200
    [record] = admin_service.audit.records
    assert (record.actor, record.method, record.path, record.outcome) == (str(ADMIN_ID), "GET", path, "served")


async def test_revoke_is_recorded_requested_then_done_with_its_target_and_reason(
    admin_service: AdminService, admin_tls: ssl.SSLContext
) -> None:
    url = f"{admin_service.url}/admin/v1/keys/k-live/revoke"
    reply = await request(admin_tls, "POST", url, json_body={"reason": "leaked in a CI log"})
    assert reply.status == 200
    assert reply.body["audited"] is True
    path = "/admin/v1/keys/{kid}/revoke"
    intent = {"kid": "k-live", "reason": "leaked in a CI log"}
    assert admin_service.audit.records == [
        Recorded(str(ADMIN_ID), "POST", path, "requested", intent),
        Recorded(str(ADMIN_ID), "POST", path, "done", {**intent, "active_kid": "k-fresh", "live_tokens": 3}),
    ]


async def test_rotate_is_recorded_requested_then_done(admin_service: AdminService, admin_tls: ssl.SSLContext) -> None:
    reply = await request(admin_tls, "POST", f"{admin_service.url}/admin/v1/keys/rotate", json_body={})
    assert reply.status == 200
    assert admin_service.audit.outcomes() == ["requested", "done"]
    assert admin_service.keys.rotations == 1


@pytest.mark.parametrize(
    ("kid", "status", "error"), [("k-nope", 404, "unknown_kid"), ("k-gone", 409, "kid_already_revoked")]
)
async def test_revoke_refused_by_the_keyring_maps_to_its_status_and_is_recorded_refused(
    admin_service: AdminService, admin_tls: ssl.SSLContext, kid: str, status: int, error: str
) -> None:
    reply = await request(admin_tls, "POST", f"{admin_service.url}/admin/v1/keys/{kid}/revoke", json_body={})
    assert (reply.status, reply.body["error"]) == (status, error)
    assert kid in reply.body["error_description"]
    assert admin_service.audit.outcomes() == ["requested", "refused"]
    assert admin_service.audit.records[1].detail == {"kid": kid, "error": error, "status": status}
    assert admin_service.keys.revoked == []


async def test_change_is_not_made_when_its_request_cannot_be_recorded(
    admin_service: AdminService, admin_tls: ssl.SSLContext
) -> None:
    admin_service.audit.fail_on = frozenset({"requested"})
    reply = await request(admin_tls, "POST", f"{admin_service.url}/admin/v1/keys/k-live/revoke", json_body={})
    assert (reply.status, reply.body["error"]) == (503, "audit_unavailable")
    assert "nothing was done" in reply.body["error_description"]
    assert admin_service.keys.revoked == []
    assert [k.state for k in admin_service.keys.keys if k.kid == "k-live"] == ["active"]


@pytest.mark.parametrize("path", READS)
async def test_read_is_not_disclosed_when_it_cannot_be_recorded(
    admin_service: AdminService, admin_tls: ssl.SSLContext, path: str
) -> None:
    admin_service.audit.fail_on = frozenset({"served"})
    reply = await request(admin_tls, "GET", f"{admin_service.url}{path}")
    assert (reply.status, reply.body["error"]) == (503, "audit_unavailable")
    assert set(reply.body) == {"error", "error_description"}


async def test_refusal_that_cannot_be_recorded_is_503(admin_service: AdminService, ca: DevCA) -> None:
    admin_service.audit.fail_on = frozenset({"refused"})
    reply = await request(client_context(None, ca), "GET", f"{admin_service.url}/admin/v1/keys")
    assert (reply.status, reply.body["error"]) == (503, "audit_unavailable")


async def test_change_made_but_not_recorded_done_is_reported_as_made(
    admin_service: AdminService, admin_tls: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    admin_service.audit.fail_on = frozenset({"done"})
    with caplog.at_level(logging.ERROR, logger="broker.admin"):
        reply = await request(admin_tls, "POST", f"{admin_service.url}/admin/v1/keys/k-live/revoke", json_body={})
    assert reply.status == 200
    assert (reply.body["revoked_kid"], reply.body["audited"]) == ("k-live", False)
    assert admin_service.keys.revoked == ["k-live"]
    assert admin_service.audit.outcomes() == ["requested"]
    assert any("DONE but its outcome is not in the audit journal" in r.getMessage() for r in caplog.records)


async def test_unexpected_failure_of_an_operation_is_500_and_recorded_failed(
    admin_service: AdminService, admin_tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(kid: str) -> object:
        raise RuntimeError("driver exploded with secret-ish text")

    monkeypatch.setattr(admin_service.keys, "revoke", broken)
    reply = await request(admin_tls, "POST", f"{admin_service.url}/admin/v1/keys/k-live/revoke", json_body={})
    assert (reply.status, reply.body["error"]) == (500, "server_error")
    assert "secret-ish" not in str(reply.body)
    assert admin_service.audit.outcomes() == ["requested", "failed"]


async def test_store_outage_during_a_change_is_503_and_recorded_failed_not_refused(
    admin_service: AdminService, admin_tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store went away mid-change: whether it happened is unknown, so the record says failed."""

    async def outage(kid: str) -> object:
        raise StoreUnavailableError("postgresql://broker:hunter2@db/broker: server closed the connection")

    monkeypatch.setattr(admin_service.keys, "revoke", outage)
    reply = await request(admin_tls, "POST", f"{admin_service.url}/admin/v1/keys/k-live/revoke", json_body={})
    assert (reply.status, reply.body["error"]) == (503, "temporarily_unavailable")
    assert "hunter2" not in str(reply.body)
    assert admin_service.audit.outcomes() == ["requested", "failed"]
    assert admin_service.audit.records[1].detail == {"kid": "k-live", "error": "temporarily_unavailable"}


async def test_no_secret_in_any_answer_log_or_record(
    admin_service: AdminService, admin_tls: ssl.SSLContext, ca: DevCA, caplog: pytest.LogCaptureFixture
) -> None:
    """A secret sent in a refused body, the store password in a journal failure, and the client's private key
    appear in no answer, no log line and no audit record."""
    svid = ca.issue_x509_svid(ADMIN_ID, ttl=600)
    key_pem = svid.key_pem().decode()
    secret = "s3cr3t-sentinel-value"
    answers = []
    with caplog.at_level(logging.DEBUG):
        url = admin_service.url
        answers.append(await request(admin_tls, "POST", f"{url}/admin/v1/keys/rotate", json_body={"password": secret}))
        answers.append(await request(admin_tls, "POST", f"{url}/admin/v1/keys/k-live/revoke", data=secret,
                                     headers={"Content-Type": "application/json"}))  # fmt: skip
        answers.append(await request(admin_tls, "GET", f"{url}/admin/v1/audit?event={secret}&{secret}=1"))
        admin_service.audit.fail_on = frozenset({"served"})  # its error text holds the store password
        answers.append(await request(admin_tls, "GET", f"{url}/admin/v1/keys"))
    assert [a.status for a in answers] == [400, 400, 400, 503]
    seen = [str(a.body) for a in answers] + [r.getMessage() for r in caplog.records]
    seen += [str(r) for r in admin_service.audit.records]
    for text in seen:
        assert secret not in text and "hunter2" not in text and key_pem not in text
    assert admin_service.keys.rotations == 0 and admin_service.keys.revoked == []
