"""AdminClient round-trips every endpoint over mTLS, checks the server's SPIFFE ID, and maps error codes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from broker.admin.client import AdminClient
from broker.admin.errors import AuditUnavailableError, KidAlreadyRevokedError, KidNotFoundError
from broker.admin.ports import AuditQuery, BlastRadius, KeyRevocation, KeyRotation, StoreStatus, SubjectCount
from broker.admin.wire import WireError, decode_keys, decode_revocation
from broker.devtools.devca import DevCA
from broker.errors import AccessDeniedError, InvalidRequestError, NetworkError
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.connector import ServerIdentityError
from broker.identity.spiffetls.context import SourceSSLContext, client_ssl_context
from tests.unit.admin.conftest import ADMIN_ID, WORKLOAD_ID, AdminService
from tests.unit.admin.fakes import T0, sample_keys


async def test_list_keys_round_trips(admin_client: AdminClient) -> None:
    assert await admin_client.list_keys() == sample_keys()


async def test_rotate_round_trips_and_reports_it_was_audited(
    admin_client: AdminClient, admin_service: AdminService
) -> None:
    change = await admin_client.rotate(reason="scheduled by hand")
    assert change.result == KeyRotation(active_kid="k-new-1", previous_kid="k-live", next_kid="k-next")
    assert change.audited is True
    assert admin_service.audit.records[0].detail == {"reason": "scheduled by hand"}


async def test_revoke_round_trips_the_blast_radius(admin_client: AdminClient) -> None:
    change = await admin_client.revoke("k-live")
    assert change.result == KeyRevocation(
        revoked_kid="k-live",
        active_kid="k-fresh",
        blast_radius=BlastRadius(
            live_tokens=3,
            subjects=(
                SubjectCount("spiffe://example.org/ns/shop/sa/web", 2),
                SubjectCount("spiffe://example.org/x", 1),
            ),
            audiences=("https://api.example.org",),
            valid_until=T0 + timedelta(minutes=5),
        ),
    )


async def test_revoke_of_an_unknown_or_revoked_kid_raises_its_class(admin_client: AdminClient) -> None:
    with pytest.raises(KidNotFoundError, match="no signing key with kid 'k-nope'"):
        await admin_client.revoke("k-nope")
    with pytest.raises(KidAlreadyRevokedError, match="already revoked"):
        await admin_client.revoke("k-gone")


async def test_kid_with_reserved_characters_is_sent_quoted(
    admin_client: AdminClient, admin_service: AdminService
) -> None:
    with pytest.raises(KidNotFoundError):
        await admin_client.revoke("a/b?c")
    assert admin_service.audit.records[0].detail == {"kid": "a/b?c"}


async def test_store_status_round_trips(admin_client: AdminClient) -> None:
    assert await admin_client.store_status() == StoreStatus(
        "postgresql", "postgresql://broker:***@db.internal/broker", 2, 2
    )


async def test_audit_round_trips_records_and_filters(admin_client: AdminClient, admin_service: AdminService) -> None:
    page = await admin_client.audit()
    assert [(r.seq, r.event, r.body) for r in page.records] == [
        (1, "token.issued", {"sub": str(WORKLOAD_ID)}),
        (2, "key.rotated", {"kid": "k-live"}),
    ]
    stored = admin_service.reader.records
    assert [r.hash for r in page.records] == [r.hash.hex() for r in stored]
    assert page.records[1].prev_hash == stored[0].hash.hex()
    assert page.records[0].at == stored[0].at and page.next_after == 2
    query = AuditQuery(after=1, limit=5, event="key.rotated", spiffe_id=WORKLOAD_ID)
    filtered = await admin_client.audit(query)
    assert admin_service.reader.queries[-1] == query
    assert filtered.records == () and filtered.next_after == 1


async def test_error_codes_map_to_classes(admin_client: AdminClient, admin_service: AdminService) -> None:
    admin_service.audit.fail_on = frozenset({"requested"})
    with pytest.raises(AuditUnavailableError, match="nothing was done"):
        await admin_client.rotate()
    with pytest.raises(InvalidRequestError, match="reason must be"):
        await admin_client.rotate(reason="x" * 201)


async def test_a_non_admin_client_gets_access_denied(admin_service: AdminService, ca: DevCA) -> None:
    context = client_context_for(ca, WORKLOAD_ID, server_id=SpiffeId.parse("spiffe://example.org/broker"))
    async with AdminClient(admin_service.url, context) as client:
        with pytest.raises(AccessDeniedError, match="is not an admin"):
            await client.list_keys()
    context.detach()


async def test_wrong_server_id_is_refused_before_any_request(admin_service: AdminService, ca: DevCA) -> None:
    context = client_context_for(ca, ADMIN_ID, server_id=SpiffeId.parse("spiffe://example.org/not-the-broker"))
    async with AdminClient(admin_service.url, context) as client:
        with pytest.raises(ServerIdentityError):
            await client.revoke("k-live")
    context.detach()
    assert admin_service.audit.records == [] and admin_service.keys.revoked == []


async def test_unreachable_server_is_a_network_error(ca: DevCA) -> None:
    context = client_context_for(ca, ADMIN_ID, server_id=None)
    async with AdminClient("https://127.0.0.1:9", context) as client:
        with pytest.raises(NetworkError, match=r"cannot reach the admin API at https://127\.0\.0\.1:9"):
            await client.list_keys()
    context.detach()


def test_plain_http_url_is_refused(ca: DevCA) -> None:
    context = client_context_for(ca, ADMIN_ID, server_id=None)
    with pytest.raises(ValueError, match="https"):
        AdminClient("http://127.0.0.1:8443", context)
    context.detach()


def client_context_for(ca: DevCA, spiffe_id: SpiffeId, *, server_id: SpiffeId | None) -> SourceSSLContext:
    return client_ssl_context(InMemorySvidSource(ca, spiffe_id), server_id=server_id)


async def test_change_survives_a_client_that_goes_away_and_its_outcome_is_recorded(
    admin_client: AdminClient, admin_service: AdminService
) -> None:
    admin_service.keys.gate = asyncio.Event()
    call = asyncio.create_task(admin_client.revoke("k-live"))
    async with asyncio.timeout(5):
        await admin_service.audit.wait_for(["requested"])
    call.cancel()
    await admin_client.aclose()  # the connection is gone while the keyring is still working
    admin_service.keys.gate.set()
    async with asyncio.timeout(5):
        await admin_service.audit.wait_for(["requested", "done"])
    assert admin_service.keys.revoked == ["k-live"]


def test_answer_of_another_shape_is_refused() -> None:
    with pytest.raises(WireError, match="'kid'"):
        decode_keys({"keys": [{"kid": 7, "state": "active"}]})
    with pytest.raises(WireError, match="'state' is not a key state"):
        decode_keys({"keys": [{"kid": "k", "state": "exploded"}]})
    with pytest.raises(WireError, match="'tokens'"):
        decode_revocation(
            {"revoked_kid": "a", "active_kid": "b", "blast_radius": {"subjects": [{"spiffe_id": "x", "tokens": True}]}}
        )
