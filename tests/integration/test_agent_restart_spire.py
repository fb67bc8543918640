"""The spine rides out a SPIRE agent restart: while the agent is down the sidecar serves its cached (still valid)
token; when the agent is back the sidecar's Workload API streams reconnect by themselves and new tokens flow."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.integration.spine import APP, DEMO_SCOPE, Spine, agent_x5t, jwt_part, spine_fixture
from tests.integration.spire import SpireDeployment

pytestmark = pytest.mark.spire

OUTAGE_POLL = 3.0  # seconds of polling the sidecar while the agent is down


spine = spine_fixture(APP)


@pytest.fixture
def agent_restored(spire: SpireDeployment) -> Iterator[SpireDeployment]:
    """The deployment; its agent runs again after the test, also when the test fails while it is stopped."""
    try:
        yield spire
    finally:
        if not spire.agent_running:
            spire.stop_agent()  # forgets an agent process that died
            spire.start_agent()


def _access_token(spine: Spine, scope: str | None = None) -> str:
    reply = spine.token(scope=scope)
    assert reply.status == 200, reply.body
    token: str = reply.json()["access_token"]
    return token


def test_sidecar_serves_cached_token_while_agent_is_down_and_recovers_after_restart(
    spine: Spine, agent_restored: SpireDeployment
) -> None:
    cached = _access_token(spine)
    old_x5t = agent_x5t(agent_restored, APP)
    since = len(spine.procs.log("sidecar"))

    agent_restored.stop_agent()
    spine.procs.wait_for_log("sidecar", "lost the Workload API", since=since, timeout=15)
    deadline = time.monotonic() + OUTAGE_POLL
    while time.monotonic() < deadline:
        assert _access_token(spine) == cached
        assert spine.sidecar_ready()
        time.sleep(0.2)

    since = len(spine.procs.log("sidecar"))
    agent_restored.start_agent()
    spine.procs.wait_for_log("sidecar", "reconnected to the Workload API", since=since, timeout=30)
    spine.procs.wait_for("sidecar /readyz after the restart", spine.sidecar_ready)
    # The restarted agent issues new X509-SVIDs (its SVID cache is in memory): the sidecar drops the token bound to
    # the old certificate and exchanges again, for the cached key and for a key never asked for before.
    new_x5t = agent_x5t(agent_restored, APP)
    assert new_x5t != old_x5t, "the restarted agent kept the old X509-SVID: the rebinding below proves nothing"
    for scope in (None, DEMO_SCOPE):
        fresh = _access_token(spine, scope=scope)
        assert fresh != cached
        assert jwt_part(fresh, 1)["cnf"] == {"x5t#S256": new_x5t}
    result = spine.call(scope=DEMO_SCOPE)
    assert (result.returncode, result.status) == (0, 200), result.stderr
    assert result.json() == {"hello": APP.spiffe_id, "scope": DEMO_SCOPE}
