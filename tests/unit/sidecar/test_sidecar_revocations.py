"""The sidecar on the revocation feed (the real feed over mTLS): its own quarantine stops it serving, a revoked
token leaves its cache, and nothing else changes."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from broker._backoff import Backoff
from broker.devtools.devca import DevCA
from broker.events.revocations import SubjectPattern, SubjectQuarantined, SubjectReleased, TokenRevoked
from broker.identity.memory import InMemorySvidSource
from broker.sidecar.service import RunningSidecar
from broker.sidecar.token_result import TokenResult
from broker.testing import FakeTokenService
from broker.verify.feed import RevocationFeedFollower
from tests.unit.server.feed_helpers import FeedServer, feed_server, later, until
from tests.unit.server.token_service_helpers import BROKER_ID as FEED_SERVER_ID
from tests.unit.sidecar.sidecar_helpers import API, WEB_ID, Starter, sidecar_get

TOKEN = {"audience": API}


class TokenServiceWithJtis(FakeTokenService):
    """The fake token service, with the jti, kid and iat the real one's tokens carry."""

    async def exchange(self, audience: str, scope: str | None) -> TokenResult:
        result = await super().exchange(audience, scope)
        return dataclasses.replace(result, jti=f"jti-{len(self.calls)}", kid="key-1", issued_at=time.time() - 1)


@dataclasses.dataclass
class Setup:
    server: FeedServer
    sidecar: RunningSidecar
    tokens: TokenServiceWithJtis
    follower: RevocationFeedFollower


@pytest.fixture
async def setup(ca: DevCA, start: Starter, workload_source: InMemorySvidSource) -> AsyncIterator[Setup]:
    async with feed_server(ca) as server:
        follower = RevocationFeedFollower.over_mtls(
            issuer=server.issuer, source=workload_source, server_id=FEED_SERVER_ID,
            backoff=Backoff(0.01, 0.05), on_stale="accept",
        )  # fmt: skip
        tokens = TokenServiceWithJtis(workload_source)
        sidecar = await start(workload_source, token_service=tokens, revocation_follower=follower)
        assert await follower.wait_synced(5)
        yield Setup(server, sidecar, tokens, follower)


def quarantine(pattern: str) -> SubjectQuarantined:
    at = datetime.now(UTC).replace(microsecond=0)
    return SubjectQuarantined(SubjectPattern.parse(pattern), at, None, at + timedelta(hours=1), reason="test")


async def test_a_quarantine_of_its_own_id_drops_its_tokens_and_stops_serving_until_released(setup: Setup) -> None:
    socket = setup.sidecar.socket_path
    assert socket is not None
    before = await sidecar_get(socket, "/v1/token", TOKEN)

    await setup.server.append([quarantine(str(WEB_ID))])
    await until(lambda: setup.sidecar.cache.suspended)
    during = await sidecar_get(socket, "/v1/token", TOKEN)
    status = (await sidecar_get(socket, "/v1/status")).body
    await setup.server.append([SubjectReleased(SubjectPattern.parse(str(WEB_ID)), datetime.now(UTC))])
    await until(lambda: not setup.sidecar.cache.suspended)
    after = await sidecar_get(socket, "/v1/token", TOKEN)

    assert before.status == 200
    assert (during.status, during.body["error"]) == (403, "access_denied")
    assert "this workload is quarantined" in during.body["error_description"]
    assert status["quarantined"] is True and status["cached_tokens"] == 0
    assert status["revocation_feed"]["seq"] == 1
    assert after.status == 200 and after.body["access_token"] != before.body["access_token"]
    assert len(setup.tokens.calls) == 2  # no exchange while quarantined


async def test_a_quarantine_of_a_prefix_covering_it_counts_and_of_another_id_does_not(setup: Setup) -> None:
    socket = setup.sidecar.socket_path
    assert socket is not None
    await sidecar_get(socket, "/v1/token", TOKEN)

    await setup.server.append([quarantine("spiffe://example.org/ns/other/*")])
    await until(lambda: setup.follower.index.seq == 1)
    unaffected = await sidecar_get(socket, "/v1/token", TOKEN)
    await setup.server.append([quarantine("spiffe://example.org/ns/*")])
    await until(lambda: setup.sidecar.cache.suspended)

    assert unaffected.status == 200 and len(setup.tokens.calls) == 1
    assert (await sidecar_get(socket, "/v1/token", TOKEN)).status == 403


async def test_a_revoked_jti_leaves_the_cache_and_the_next_request_gets_a_fresh_token(setup: Setup) -> None:
    socket = setup.sidecar.socket_path
    assert socket is not None
    first = await sidecar_get(socket, "/v1/token", TOKEN)
    other = await sidecar_get(socket, "/v1/token", {"audience": API, "scope": "orders:read"})

    await setup.server.append([TokenRevoked("jti-1", later())])
    await until(lambda: len(setup.sidecar.cache) == 1)
    second = await sidecar_get(socket, "/v1/token", TOKEN)
    other_again = await sidecar_get(socket, "/v1/token", {"audience": API, "scope": "orders:read"})

    assert second.status == 200 and second.body["access_token"] != first.body["access_token"]
    assert other_again.body["access_token"] == other.body["access_token"]  # jti-2 was not revoked
    assert len(setup.tokens.calls) == 3
