"""The token service as ``spiffe-broker server`` runs it serves API-key exceptions end to end, on SQLite and on the
in-memory twin: an admin registers one on the admin API, the workload's sidecar gets its catalog and a grant over
mTLS and reports its uses; a quarantine of the workload refuses the next grant; a suspension puts
``exception.withdrawn`` on the revocation log and refuses every grant."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from broker._sealing import generate_kek_file
from broker.admin.client import AdminClient
from broker.apikeys.grant import EgressReport, UseCount, catalog_from_wire, grant_from_wire, report_to_wire
from broker.config import load_settings
from broker.devtools.devca import DevCA
from broker.events.revocations import ExceptionWithdrawn
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.context import client_ssl_context
from broker.server.apikeys import APIKEYS
from broker.server.stateful_service import StatefulTokenService, start_stateful_token_service
from broker.tokens.policy import FilePolicyStore
from tests.unit.apikeys.conftest import CANARY, sample
from tests.unit.server.token_service_helpers import BROKER_ID, CLIENT_ID, ISSUER, POLICY, client_context, request

ADMIN_ID = SpiffeId.parse("spiffe://example.org/ops/admin")


@pytest.fixture
def ca() -> DevCA:
    return DevCA.ephemeral("example.org")


@pytest.fixture(params=["sqlite", "memory"])
async def service(ca: DevCA, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[StatefulTokenService]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    generate_kek_file(tmp_path / "kek")
    store = {"url": "memory:"} if request.param == "memory" else {}
    settings = load_settings(None, {"state_dir": tmp_path / "state", "store": store,
                                    "keyring": {"kek_file": tmp_path / "kek"},
                                    "admin": {"spiffe_ids": [str(ADMIN_ID)]}})  # fmt: skip
    running = await start_stateful_token_service(
        settings, source=InMemorySvidSource(ca, BROKER_ID), policy_store=FilePolicyStore(tmp_path / "policy.yaml"),
        issuer=ISSUER, listen_host="127.0.0.1", listen_port=0,
    )  # fmt: skip
    try:
        yield running
    finally:
        await running.aclose()


async def test_register_grant_report_and_a_quarantine_refuses_the_next_grant(
    ca: DevCA, service: StatefulTokenService
) -> None:
    url = f"https://127.0.0.1:{service.port}"
    context = client_ssl_context(InMemorySvidSource(ca, ADMIN_ID), server_id=BROKER_ID)
    workload = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    try:
        async with AdminClient(url, context) as admin:
            added = await admin.add_apikey(sample(expires_at=_in_days(60)), CANARY)
            assert added.audited
            catalog = await request(workload, "GET", f"{url}/v1/apikeys")
            assert [e.name for e in catalog_from_wire(catalog.body).entries] == ["stripe"]
            granted = await request(workload, "POST", f"{url}/v1/apikeys/stripe/grant")
            assert granted.status == 200 and grant_from_wire(granted.body).secret == CANARY.decode()
            use = UseCount("stripe", 1, "https://api.stripe.com:443", 3, _in_days(0))
            reported = await request(workload, "POST", f"{url}/v1/apikeys/report",
                                     json_body=report_to_wire(EgressReport(uses=(use,))))  # fmt: skip
            assert reported.status == 204
            await service.app[APIKEYS].usage.flush()
            [row] = (await admin.apikeys_report()).rows
            assert [(u.spiffe_id, u.count) for u in row.uses] == [(str(CLIENT_ID), 3)]
            await admin.quarantine(str(CLIENT_ID), reason="drill", until="10m")
            refused = await _until_refused(workload, f"{url}/v1/apikeys/stripe/grant")
            assert refused == {"error": "access_denied", "error_description": "this client's SPIFFE ID is quarantined"}
    finally:
        context.detach()


async def test_a_suspension_is_withdrawn_on_the_revocation_log_and_refuses_every_grant(
    ca: DevCA, service: StatefulTokenService
) -> None:
    url = f"https://127.0.0.1:{service.port}"
    context = client_ssl_context(InMemorySvidSource(ca, ADMIN_ID), server_id=BROKER_ID)
    workload = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    try:
        async with AdminClient(url, context) as admin:
            await admin.add_apikey(sample(expires_at=_in_days(60)), CANARY)
            assert (await request(workload, "POST", f"{url}/v1/apikeys/stripe/grant")).status == 200
            suspended = await admin.change_apikey("stripe", "suspend", "investigating SEC-1301")
            assert suspended.audited
    finally:
        context.detach()
    [withdrawn] = [e.event for e in (await service.state.store.revocations.read(0)).entries]
    assert isinstance(withdrawn, ExceptionWithdrawn) and withdrawn.name == "stripe"
    refused = await request(workload, "POST", f"{url}/v1/apikeys/stripe/grant")
    assert (refused.status, refused.body["error_description"]) == (403, "the exception is suspended")
    await service.state.recorder.trail.flush()  # grants and refusals go through the trail's group commit
    events = [r.event for r in await service.state.store.audit.read(1, 1000)]
    assert {"apikey.added", "apikey.granted", "apikey.suspended", "apikey.refused"} <= set(events)


def _in_days(days: int) -> datetime:
    """From the wall clock, which the service runs on."""
    return datetime.now(UTC) + timedelta(days=days)


async def _until_refused(workload: ssl.SSLContext, url: str) -> Any:
    for _ in range(50):  # the replica's revocation view follows the log's change events
        reply = await request(workload, "POST", url)
        if reply.status == 403:
            return reply.body
        await asyncio.sleep(0.05)
    raise AssertionError("the quarantine never reached the grant")
