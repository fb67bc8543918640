"""A PostgreSQL outage mid-run: the token service keeps serving what does not need the store, refuses what does
with ``temporarily_unavailable``, loses nothing it acknowledged, and recovers by itself (issue 9, "Bad input and
faults"). Real PostgreSQL (:mod:`tests.postgres`), stopped and started again under the running service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker._sealing import generate_kek_file
from broker.config import load_settings
from broker.devtools.devca import DevCA
from broker.errors import StoreUnavailableError
from broker.identity.memory import InMemorySvidSource
from broker.server.stateful_service import StatefulTokenService, start_stateful_token_service
from broker.tokens.policy import FilePolicyStore
from tests.postgres import PostgresCluster, running_cluster
from tests.unit.server.token_service_helpers import API, BROKER_ID, CLIENT_ID, ISSUER, POLICY, client_context, request

RECOVERY_BOUND_S = 20.0


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    """A private cluster for this test alone (it is stopped and started under the service)."""
    with running_cluster() as cluster:
        yield cluster


async def _start(cluster: PostgresCluster, tmp_path: Path, source: InMemorySvidSource) -> StatefulTokenService:
    (tmp_path / "policy.yaml").write_text(POLICY)
    generate_kek_file(tmp_path / "kek")
    settings = load_settings(
        None,
        {
            "state_dir": tmp_path / "state",
            "store": {"url": cluster.url(cluster.create_database())},
            "keyring": {"kek_file": tmp_path / "kek"},
            "ledger": {"batch_window": 0.02},
        },
    )
    return await start_stateful_token_service(
        settings,
        source=source,
        policy_store=FilePolicyStore(tmp_path / "policy.yaml"),
        issuer=ISSUER,
        listen_host="127.0.0.1",
        listen_port=0,
    )


async def test_tokens_keep_flowing_through_an_outage_and_the_ledger_catches_up(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    ca = DevCA.ephemeral("example.org")
    source = InMemorySvidSource(ca, BROKER_ID)
    ctx = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    form = {"grant_type": "client_credentials", "audience": API}
    service = await _start(cluster, tmp_path, source)
    url = f"https://127.0.0.1:{service.port}"
    try:
        assert (await request(ctx, "POST", f"{url}/token", data=form)).status == 200
        cluster.pause()
        during = [await request(ctx, "POST", f"{url}/token", data=form) for _ in range(5)]
        assert [reply.status for reply in during] == [200] * 5  # signing and policy need no store
        assert (await request(ctx, "GET", f"{url}/jwks.json")).status == 200
        with pytest.raises(StoreUnavailableError):
            await service.state.keyring.reload()  # what needs the store says so
        cluster.resume()
        await _until_recorded(service, 6)  # every token acknowledged during the outage is in the ledger now
    finally:
        await service.aclose()


async def _until_recorded(service: StatefulTokenService, count: int) -> None:
    """Wait (bounded) until the ledger holds ``count`` rows: the writer retried what the outage held back."""
    started = time.monotonic()
    while True:
        rows = await _ledger_rows(service)
        if rows >= count:
            return
        assert time.monotonic() - started < RECOVERY_BOUND_S, f"ledger holds {rows} of {count} after the outage"
        await asyncio.sleep(0.2)


async def _ledger_rows(service: StatefulTokenService) -> int:
    try:
        radius = await service.state.store.ledger.blast_radius(
            service.state.keyring.active_key().kid, datetime.now(UTC)
        )
    except StoreUnavailableError:
        return -1
    return radius.live_tokens
