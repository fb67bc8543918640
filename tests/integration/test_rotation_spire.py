"""X.509-SVID rotation by a real SPIRE agent while the sidecar is polled: it keeps answering, and the tokens it
hands out after a rotation are bound (RFC 8705 §3.1 ``cnf.x5t#S256``) to the new certificate, which the demo API
accepts."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from tests.integration.spine import ROTATING_APP, Spine, agent_x5t, jwt_part, spine_fixture

pytestmark = pytest.mark.spire

POLL_INTERVAL = 0.2
AGENT_POLL_EVERY = 5  # sidecar polls per look at the agent's current SVID (about once a second)
# The agent renews an X509-SVID past half of notBefore..notAfter, checked on its 5 s sync; SPIRE backdates notBefore
# by 10 s, so with the entry's x509SVIDTTL of 20 s a new certificate comes about every 5 s. Two rotations show the
# sidecar follows more than its first change of certificate.
ROTATIONS = 2
MAX_WAIT = 45.0
OBSERVE_AFTER_ROTATION = 2.0


@dataclass(frozen=True)
class Sample:
    at: float
    status: int
    token: str
    cnf: str | None


spine = spine_fixture(ROTATING_APP)


def _sample(spine: Spine) -> Sample:
    reply = spine.token()
    if reply.status != 200:
        return Sample(time.monotonic(), reply.status, "", None)
    token = reply.json()["access_token"]
    return Sample(time.monotonic(), 200, token, jwt_part(token, 1)["cnf"]["x5t#S256"])


def _poll_through_rotation(spine: Spine) -> tuple[list[Sample], set[str]]:
    """Poll the sidecar every 200 ms until ``ROTATIONS`` rotations were seen and served for a while (bounded)."""
    samples: list[Sample] = []
    agent_certs = {agent_x5t(spine.spire, ROTATING_APP)}
    deadline = time.monotonic() + MAX_WAIT
    rotated_at: float | None = None
    while time.monotonic() < deadline:
        samples.append(_sample(spine))
        if len(samples) % AGENT_POLL_EVERY == 0:
            agent_certs.add(agent_x5t(spine.spire, ROTATING_APP))
        if rotated_at is None and len({s.cnf for s in samples if s.cnf}) > ROTATIONS:
            rotated_at = time.monotonic()
        if rotated_at is not None and time.monotonic() - rotated_at > OBSERVE_AFTER_ROTATION:
            break
        time.sleep(POLL_INTERVAL)
    agent_certs.add(agent_x5t(spine.spire, ROTATING_APP))
    return samples, agent_certs


def _distinct_in_order(values: list[str | None]) -> list[str | None]:
    runs: list[str | None] = []
    for value in values:
        if not runs or runs[-1] != value:
            runs.append(value)
    return runs


def test_sidecar_serves_through_rotation_with_tokens_bound_to_the_new_certificate(spine: Spine) -> None:
    samples, agent_certs = _poll_through_rotation(spine)
    failed = [s for s in samples if s.status != 200]
    assert not failed, f"{len(failed)} of {len(samples)} requests failed, statuses {sorted({s.status for s in failed})}"
    bindings = _distinct_in_order([s.cnf for s in samples])
    assert len(bindings) > ROTATIONS, (
        f"not {ROTATIONS} rotations in {samples[-1].at - samples[0].at:.1f}s ({len(samples)} requests)"
    )
    # Once a token for the new certificate is served, a token for an older one never comes back.
    assert len(bindings) == len(set(bindings))
    # Every token is bound to a certificate the agent really served this identity.
    assert set(bindings) <= agent_certs
    # Tokens never outlive the certificate they are bound to (the policy alone would allow 300 s).
    assert all(jwt_part(s.token, 1)["exp"] - jwt_part(s.token, 1)["iat"] <= ROTATING_APP.x509_ttl for s in samples)


def test_token_after_rotation_is_bound_to_the_current_svid_and_accepted_by_demo_api(spine: Spine) -> None:
    for _ in range(3):  # the agent may rotate between two looks: retry until both agree
        before = agent_x5t(spine.spire, ROTATING_APP)
        sample = _sample(spine)
        if before == sample.cnf == agent_x5t(spine.spire, ROTATING_APP):
            break
        time.sleep(1.0)
    assert sample.status == 200
    assert sample.cnf == before
    result = spine.call()
    assert (result.returncode, result.status) == (0, 200), result.stderr
    assert result.json()["hello"] == ROTATING_APP.spiffe_id
