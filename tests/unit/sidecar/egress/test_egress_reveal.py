"""``GET /v1/apikeys/{name}`` on the sidecar's socket: a ``reveal`` exception's secret for the app; an ``inject``
exception is refused (its requests go through the egress proxy), an unknown one is 404, a withdrawn one 403."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.apikeys.model import Delivery
from broker.events.revocations import ExceptionWithdrawn
from broker.identity.memory import InMemorySvidSource
from broker.sidecar.egress.client import ApiKeyClient
from broker.sidecar.egress.service import EgressOptions
from broker.sidecar.service import RunningSidecar
from broker.testing import FakeTokenService
from broker.verify.feed import RevocationFeedFollower
from tests.unit.server.feed_helpers import later, until
from tests.unit.sidecar.egress.fake_apikeys import SECRET, FakeApiKeys, entry, fake_apikeys
from tests.unit.sidecar.egress.target_server import TargetServer, TargetTls
from tests.unit.sidecar.sidecar_helpers import BROKER_ID, Starter, sidecar_get

REVEALED = "vault-token-REVEAL-0123456789abcdef"


@pytest.fixture
async def apikeys(broker_source: InMemorySvidSource, target: TargetServer) -> AsyncIterator[FakeApiKeys]:
    async with fake_apikeys(broker_source) as fake:
        fake.add(entry("stripe", "localhost", target.port, prefix="/v1/"), SECRET)
        revealed = replace(entry("vault", "localhost", target.port, slot="X-Vault-Token", template="{secret}"),
                           delivery=Delivery.REVEAL)  # fmt: skip
        fake.add(revealed, REVEALED)
        yield fake


@pytest.fixture
async def sidecar(
    start: Starter, workload_source: InMemorySvidSource, apikeys: FakeApiKeys, tls: TargetTls, tmp_short: Path
) -> RunningSidecar:
    follower = RevocationFeedFollower.over_mtls(issuer=apikeys.issuer, source=workload_source, server_id=BROKER_ID,
                                                on_stale="accept")  # fmt: skip
    link = ApiKeyClient(source=workload_source, issuer=apikeys.issuer, server_id=BROKER_ID)
    egress = EgressOptions(port=0, ca_file=tls.ca_file)
    running: RunningSidecar = await start(workload_source, token_service=FakeTokenService(workload_source),
                          revocation_follower=follower, egress=egress, apikeys=link)  # fmt: skip
    assert await follower.wait_synced(5)
    return running


async def test_a_reveal_exception_is_handed_to_the_app_with_its_rendered_header_and_hold_time(
    sidecar: RunningSidecar, apikeys: FakeApiKeys
) -> None:
    assert sidecar.socket_path is not None
    reply = await sidecar_get(sidecar.socket_path, "/v1/apikeys/vault")
    assert reply.status == 200, reply.body
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.body["secret"] == REVEALED and reply.body["version"] == 1
    assert reply.body["header"] == {"name": "X-Vault-Token", "value": REVEALED}
    assert 0 < reply.body["expires_in"] <= apikeys.hold


async def test_an_inject_exception_is_never_revealed_and_an_unknown_one_is_404(sidecar: RunningSidecar) -> None:
    assert sidecar.socket_path is not None
    inject = await sidecar_get(sidecar.socket_path, "/v1/apikeys/stripe")
    unknown = await sidecar_get(sidecar.socket_path, "/v1/apikeys/nothing")
    assert (inject.status, inject.body["error"]) == (403, "access_denied")
    assert "through the egress proxy" in inject.body["error_description"]
    assert SECRET not in str(inject.body)
    assert (unknown.status, unknown.body["error"]) == (404, "not_found")


async def test_a_withdrawn_reveal_exception_is_refused_at_once(sidecar: RunningSidecar, apikeys: FakeApiKeys) -> None:
    assert sidecar.socket_path is not None
    assert (await sidecar_get(sidecar.socket_path, "/v1/apikeys/vault")).status == 200
    apikeys.refused.add("vault")  # a new grant would be refused; the held one serves until the feed drops it
    assert (await sidecar_get(sidecar.socket_path, "/v1/apikeys/vault")).status == 200
    apikeys.append([ExceptionWithdrawn("vault", datetime.now(UTC), later())])
    grants = sidecar.egress.proxy.grants if sidecar.egress is not None else None
    assert grants is not None
    await until(lambda: grants.held_for("vault") == 0)
    reply = await sidecar_get(sidecar.socket_path, "/v1/apikeys/vault")
    assert (reply.status, reply.body["error"]) == (403, "not_granted")
