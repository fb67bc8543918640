"""Two replicas of the stateful token service on one real store (SQLite file, PostgreSQL): a token revoked on one
is reported inactive by introspection on the other at once (issue 10), and a quarantine recorded on the log
reaches the other's ``/token`` through its follower."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker._sealing import generate_kek_file
from broker.config import load_settings
from broker.devtools.devca import DevCA
from broker.events.revocations import SubjectPattern, SubjectQuarantined
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.server.stateful_service import StatefulTokenService, start_stateful_token_service
from broker.tokens.policy import FilePolicyStore
from tests.postgres import PostgresCluster, running_cluster
from tests.unit.identity.wlapi_helpers import eventually
from tests.unit.server.token_service_helpers import API, BROKER_ID, CLIENT_ID, ISSUER, POLICY, client_context, request

RS_ID = SpiffeId.parse("spiffe://example.org/ns/shop/sa/orders-api")
FOLLOW_BOUND_S = 5.0  # the SQLite feed polls every 0.1 s; generous for a loaded CI machine
TOKEN_FORM = {"grant_type": "client_credentials", "audience": API}


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/shared/broker.db"
    cluster: PostgresCluster = request.getfixturevalue("cluster")
    return cluster.url(cluster.create_database())


@pytest.fixture
async def replicas(tmp_path: Path, store_url: str) -> AsyncIterator[tuple[DevCA, list[StatefulTokenService]]]:
    ca = DevCA.ephemeral("example.org")
    (tmp_path / "policy.yaml").write_text(POLICY)
    generate_kek_file(tmp_path / "kek")
    started: list[StatefulTokenService] = []
    try:
        for name in ("a", "b"):
            settings = load_settings(
                None,
                {
                    "state_dir": tmp_path / name,
                    "store": {"url": store_url},
                    "keyring": {"kek_file": tmp_path / "kek"},
                    "introspection": {"spiffe_ids": [str(RS_ID)]},
                },
            )
            started.append(
                await start_stateful_token_service(
                    settings,
                    source=InMemorySvidSource(ca, BROKER_ID),
                    policy_store=FilePolicyStore(tmp_path / "policy.yaml"),
                    issuer=ISSUER,
                    listen_host="127.0.0.1",
                    listen_port=0,
                )
            )
        yield ca, started
    finally:
        for service in started:
            await service.aclose()


async def test_a_revocation_on_one_replica_is_reported_by_introspection_on_the_other_at_once(
    replicas: tuple[DevCA, list[StatefulTokenService]],
) -> None:
    ca, (a, b) = replicas
    holder = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    resource = client_context(ca.issue_x509_svid(RS_ID, ttl=600), ca)
    issued = await request(holder, "POST", f"https://127.0.0.1:{a.port}/token", data=TOKEN_FORM)
    token = issued.body["access_token"]
    introspect_b = f"https://127.0.0.1:{b.port}/introspect"
    assert (await request(resource, "POST", introspect_b, data={"token": token})).body["active"] is True
    revoked = await request(holder, "POST", f"https://127.0.0.1:{a.port}/revoke", data={"token": token})
    assert revoked.status == 200
    assert (await request(resource, "POST", introspect_b, data={"token": token})).body == {"active": False}
    again = await request(holder, "POST", f"https://127.0.0.1:{b.port}/revoke", data={"token": token})
    assert again.status == 200
    assert len((await b.state.store.revocations.read(0)).entries) == 1, "revoked on a: b appends no second entry"


async def test_a_quarantine_on_the_log_reaches_the_other_replicas_token_endpoint(
    replicas: tuple[DevCA, list[StatefulTokenService]],
) -> None:
    ca, (a, b) = replicas
    holder = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    token_b = f"https://127.0.0.1:{b.port}/token"
    assert (await request(holder, "POST", token_b, data=TOKEN_FORM)).status == 200
    now = datetime.now(UTC)
    quarantine = SubjectQuarantined(SubjectPattern.parse(str(CLIENT_ID)), now, None, now + timedelta(minutes=5))
    await a.state.store.revocations.append([quarantine])

    async def refused() -> bool:
        reply = await request(holder, "POST", token_b, data=TOKEN_FORM)
        return reply.status == 403 and reply.body["error"] == "access_denied"

    await eventually(refused, timeout=FOLLOW_BOUND_S, what="replica b refusing the quarantined client")
