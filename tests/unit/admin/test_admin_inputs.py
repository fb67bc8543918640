"""Admin input is read strictly: a small JSON object of known members (POST), known query parameters (GET).

Each refusal is 400 ``invalid_request``, is audited ``refused``, and does nothing.
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from broker.admin.inputs import MAX_ADMIN_BODY
from broker.devtools.devca import DevCA
from tests.unit.admin.conftest import ADMIN_ID, AdminService
from tests.unit.server.token_service_helpers import client_context, request

JSON = {"Content-Type": "application/json"}

BAD_BODIES: list[tuple[str, Any, dict[str, str], str]] = [
    ("too large", b"{" + b" " * MAX_ADMIN_BODY + b"}", JSON, "larger than"),
    ("not JSON", b"{reason: 1}", JSON, "not valid JSON"),
    ("not an object", b"[]", JSON, "must be a JSON object"),
    ("empty", b"", JSON, "not valid JSON"),
    ("unknown member", b'{"force": true}', JSON, "does not take (it takes: reason)"),
    ("repeated member", b'{"reason": "a", "reason": "b"}', JSON, "more than once"),
    ("NaN", b'{"reason": NaN}', JSON, "NaN is not JSON"),
    ("reason not a string", b'{"reason": 7}', JSON, "reason must be a string"),
    ("reason with a newline", b'{"reason": "a\\nb"}', JSON, "without control codes"),
    ("not UTF-8", b'{"reason": "\xff"}', JSON, "not valid JSON"),
    ("form content type", b"reason=x", {"Content-Type": "application/x-www-form-urlencoded"}, "Content-Type"),
    ("latin-1 charset", b"{}", {"Content-Type": "application/json; charset=latin-1"}, "UTF-8"),
    ("compressed", b"{}", {**JSON, "Content-Encoding": "gzip"}, "uncompressed"),
]


@pytest.fixture
def admin_tls(ca: DevCA) -> ssl.SSLContext:
    return client_context(ca.issue_x509_svid(ADMIN_ID, ttl=600), ca)


def _refused_and_nothing_done(service: AdminService) -> None:
    assert service.audit.outcomes() == ["refused"]
    assert service.audit.records[0].detail == {"error": "invalid_request", "status": 400}
    assert service.keys.revoked == [] and service.keys.rotations == 0 and service.reader.queries == []


@pytest.mark.parametrize(("body", "headers", "says"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
@pytest.mark.parametrize("path", ["/admin/v1/keys/rotate", "/admin/v1/keys/k-live/revoke"])
async def test_bad_body_is_400_and_nothing_is_done(
    admin_service: AdminService, admin_tls: ssl.SSLContext, path: str, body: bytes, headers: dict[str, str], says: str
) -> None:
    reply = await request(admin_tls, "POST", f"{admin_service.url}{path}", data=body, headers=headers)
    assert (reply.status, reply.body["error"]) == (400, "invalid_request")
    assert says in reply.body["error_description"]
    _refused_and_nothing_done(admin_service)


async def test_post_with_a_query_string_is_400(admin_service: AdminService, admin_tls: ssl.SSLContext) -> None:
    url = f"{admin_service.url}/admin/v1/keys/rotate?reason=x"
    reply = await request(admin_tls, "POST", url, json_body={})
    assert reply.status == 400
    _refused_and_nothing_done(admin_service)


BAD_QUERIES = [
    ("/admin/v1/keys?all=1", "does not take (it takes: none)"),
    ("/admin/v1/store?verbose", "does not take"),
    ("/admin/v1/audit?since=1&since=2", "more than once"),
    ("/admin/v1/audit?since=-1", "since must be a whole number"),
    ("/admin/v1/audit?since=1e3", "since must be a whole number"),
    ("/admin/v1/audit?limit=0", "limit must be a whole number from 1 to 1000"),
    ("/admin/v1/audit?limit=1001", "limit must be"),
    ("/admin/v1/audit?event=", "event must be"),
    ("/admin/v1/audit?spiffe_id=https://example.org/x", "not a valid SPIFFE ID"),
]


@pytest.mark.parametrize(("path", "says"), BAD_QUERIES, ids=[q[0].split("/admin/v1/")[1] for q in BAD_QUERIES])
async def test_bad_query_is_400_and_nothing_is_read(
    admin_service: AdminService, admin_tls: ssl.SSLContext, path: str, says: str
) -> None:
    reply = await request(admin_tls, "GET", f"{admin_service.url}{path}")
    assert (reply.status, reply.body["error"]) == (400, "invalid_request")
    assert says in reply.body["error_description"]
    _refused_and_nothing_done(admin_service)


async def test_chunked_body_over_the_limit_is_400(admin_service: AdminService, admin_tls: ssl.SSLContext) -> None:
    async def chunks() -> Any:
        for _ in range(MAX_ADMIN_BODY // 512 + 2):
            yield b" " * 512

    reply = await request(admin_tls, "POST", f"{admin_service.url}/admin/v1/keys/rotate", data=chunks(), headers=JSON)
    assert reply.status == 400
    assert "larger than" in reply.body["error_description"]
    _refused_and_nothing_done(admin_service)


async def test_body_is_not_read_before_the_caller_is_an_admin(admin_service: AdminService, ca: DevCA) -> None:
    """A caller without a certificate gets 401, not 400, for a broken body: authentication comes first."""
    ctx = client_context(None, ca)
    reply = await request(ctx, "POST", f"{admin_service.url}/admin/v1/keys/rotate", data=b"{", headers=JSON)
    assert reply.status == 401
