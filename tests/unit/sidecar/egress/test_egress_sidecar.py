"""The egress proxy inside the sidecar (``start_sidecar(egress=...)``) on the real revocation feed: a withdrawal or
a quarantine drops the held secret at once, whether or not the token service can be reached."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker._backoff import Backoff
from broker.events.revocations import ExceptionWithdrawn, SubjectPattern, SubjectQuarantined, SubjectReleased
from broker.identity.memory import InMemorySvidSource
from broker.sidecar.egress.client import ApiKeyClient
from broker.sidecar.egress.service import EgressOptions
from broker.sidecar.service import RunningSidecar
from broker.testing import FakeTokenService
from broker.verify.feed import RevocationFeedFollower
from tests.unit.server.feed_helpers import later, until
from tests.unit.sidecar.egress.egress_helpers import App
from tests.unit.sidecar.egress.fake_apikeys import SECRET, FakeApiKeys, entry, fake_apikeys
from tests.unit.sidecar.egress.target_server import TargetServer, TargetTls
from tests.unit.sidecar.sidecar_helpers import BROKER_ID, WEB_ID, Starter


@dataclasses.dataclass
class Pod:
    apikeys: FakeApiKeys
    follower: RevocationFeedFollower
    sidecar: RunningSidecar
    app: App


@pytest.fixture
async def apikeys(broker_source: InMemorySvidSource, target: TargetServer) -> AsyncIterator[FakeApiKeys]:
    """``stripe`` on ``localhost`` (the sidecar's own resolver finds it; the target's certificate names it)."""
    async with fake_apikeys(broker_source) as fake:
        fake.add(entry("stripe", "localhost", target.port, prefix="/v1/"), SECRET)
        yield fake


@pytest.fixture
async def pod(
    start: Starter, workload_source: InMemorySvidSource, apikeys: FakeApiKeys, tls: TargetTls, tmp_short: Path
) -> Pod:
    """A sidecar with its egress proxy, following the fake token service's revocation feed."""
    follower = RevocationFeedFollower.over_mtls(
        issuer=apikeys.issuer, source=workload_source, server_id=BROKER_ID, backoff=Backoff(0.01, 0.05),
        on_stale="accept",
    )  # fmt: skip
    link = ApiKeyClient(source=workload_source, issuer=apikeys.issuer, server_id=BROKER_ID)
    egress = EgressOptions(socket_path=tmp_short / "egress.sock", port=0, ca_file=tls.ca_file)
    sidecar = await start(workload_source, token_service=FakeTokenService(workload_source),
                          revocation_follower=follower, egress=egress, apikeys=link)  # fmt: skip
    assert sidecar.egress is not None
    assert await follower.wait_synced(5)
    return Pod(apikeys, follower, sidecar, App(sidecar.egress))


def now() -> datetime:
    return datetime.now(UTC)


async def test_the_sidecar_serves_the_egress_proxy_with_its_own_socket_mode(pod: Pod, target: TargetServer) -> None:
    reply = await pod.app.route("GET", "/stripe/v1/x")

    assert reply.status == 200
    assert pod.sidecar.egress is not None and pod.sidecar.egress.socket_path is not None
    assert pod.sidecar.egress.socket_path.stat().st_mode & 0o777 == 0o600


async def test_a_withdrawal_on_the_feed_drops_the_held_secret_at_once(
    pod: Pod, apikeys: FakeApiKeys, target: TargetServer
) -> None:
    assert (await pod.app.route("GET", "/stripe/v1/a")).status == 200
    grants = pod.app.egress.proxy.grants
    apikeys.available = False  # from now on only the held grant could serve: a 503 shows it is gone
    pod.apikeys.append([ExceptionWithdrawn("stripe", now(), later())])
    await until(lambda: len(grants) == 0)
    after = await pod.app.route("GET", "/stripe/v1/b")

    assert (after.status, after.error) == (503, "temporarily_unavailable")
    assert [r.path_qs for r in target.received] == ["/v1/a"]


async def test_a_withdrawal_older_than_the_grant_leaves_it_alone(
    pod: Pod, apikeys: FakeApiKeys, target: TargetServer
) -> None:
    pod.apikeys.append([ExceptionWithdrawn("stripe", now() - timedelta(minutes=5), later())])
    assert (await pod.app.route("GET", "/stripe/v1/a")).status == 200
    apikeys.available = False
    pod.apikeys.append([ExceptionWithdrawn("maps", now(), later())])  # another exception's: a feed change
    await until(lambda: pod.follower.index.seq == 2)  # applied, and the grant cache told
    again = await pod.app.route("GET", "/stripe/v1/b")

    assert again.status == 200
    assert len(target.received) == 2


async def test_a_quarantine_of_the_workload_stops_injection_until_it_is_released(
    pod: Pod, target: TargetServer
) -> None:
    assert (await pod.app.route("GET", "/stripe/v1/a")).status == 200
    grants = pod.app.egress.proxy.grants
    pattern = SubjectPattern.parse(str(WEB_ID))
    at = now().replace(microsecond=0)
    pod.apikeys.append([SubjectQuarantined(pattern, at, None, at + timedelta(hours=1))])
    await until(lambda: grants.suspended)
    during = await pod.app.route("GET", "/stripe/v1/b")
    pod.apikeys.append([SubjectReleased(pattern, now())])
    await until(lambda: not grants.suspended)
    after = await pod.app.route("GET", "/stripe/v1/c")

    assert (during.status, during.error) == (403, "not_granted")
    assert "quarantined" in during.json()["error_description"]
    assert after.status == 200
    assert [r.path_qs for r in target.received] == ["/v1/a", "/v1/c"]
