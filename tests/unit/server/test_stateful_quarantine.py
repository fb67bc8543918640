"""The token service as ``spiffe-broker server`` runs it (SQLite store) serves quarantine on its admin API: a token
issued a moment ago, still queued in the ledger's batch, is revoked by ``jti``, and ``keys revoke`` puts the kid
on the revocation log (issue 10 items 4 and 5)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker._sealing import generate_kek_file
from broker.admin.client import AdminClient
from broker.config import load_settings
from broker.devtools.devca import DevCA
from broker.events.revocations import KeyRevoked, SubjectQuarantined, TokenRevoked
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.context import client_ssl_context
from broker.server.stateful_service import StatefulTokenService, start_stateful_token_service
from broker.tokens.policy import FilePolicyStore
from tests.unit.server.token_service_helpers import API, BROKER_ID, CLIENT_ID, ISSUER, POLICY, client_context, request

ADMIN_ID = SpiffeId.parse("spiffe://example.org/ops/admin")


@pytest.fixture
def ca() -> DevCA:
    return DevCA.ephemeral("example.org")


@pytest.fixture
async def service(ca: DevCA, tmp_path: Path) -> AsyncIterator[StatefulTokenService]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    generate_kek_file(tmp_path / "kek")
    settings = load_settings(
        None,
        {
            "state_dir": tmp_path / "state",
            "keyring": {"kek_file": tmp_path / "kek"},
            "ledger": {"batch_window": 5.0},  # the token's row stays queued unless the quarantine flushes it
            "admin": {"spiffe_ids": [str(ADMIN_ID)]},
        },
    )
    running = await start_stateful_token_service(
        settings, source=InMemorySvidSource(ca, BROKER_ID), policy_store=FilePolicyStore(tmp_path / "policy.yaml"),
        issuer=ISSUER, listen_host="127.0.0.1", listen_port=0,
    )  # fmt: skip
    try:
        yield running
    finally:
        await running.aclose()


def _jti(access_token: str) -> str:
    payload = access_token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


async def test_quarantine_revokes_a_token_still_queued_for_the_ledger_and_keys_revoke_publishes_the_kid(
    ca: DevCA, service: StatefulTokenService
) -> None:
    url = f"https://127.0.0.1:{service.port}"
    workload = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    issued = await request(workload, "POST", f"{url}/token", data={"grant_type": "client_credentials", "audience": API})
    assert issued.status == 200, issued.body
    context = client_ssl_context(InMemorySvidSource(ca, ADMIN_ID), server_id=BROKER_ID)
    try:
        async with AdminClient(url, context) as admin:
            added = await admin.quarantine(str(CLIENT_ID), reason="drill", until="10m")
            kid = service.state.keyring.active_key().kid
            await admin.revoke(kid, reason="drill")
    finally:
        context.detach()
    assert added.result.live_tokens == 1 and added.audited
    events = [e.event for e in (await service.state.store.revocations.read(0)).entries]
    assert [type(e) for e in events] == [SubjectQuarantined, TokenRevoked, KeyRevoked]
    assert isinstance(events[1], TokenRevoked) and events[1].jti == _jti(issued.body["access_token"])
    assert isinstance(events[2], KeyRevoked) and events[2].kid == kid
