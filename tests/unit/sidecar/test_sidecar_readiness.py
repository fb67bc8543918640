"""Readiness, status and probing (broker.sidecar.app, .health, .probe) with the real token service over mTLS.

The acceptance point of issue 7 defect 1: stopping the token service under a steady app load keeps ``/readyz``
at 200 while cached tokens are valid, and not one app request fails.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from pathlib import Path

import pytest

from broker.identity.memory import InMemorySvidSource
from broker.sidecar.health import TokenServiceHealth
from broker.sidecar.service import RunningSidecar
from broker.testing import FakeTokenService, ManualClock
from tests.unit.sidecar.sidecar_helpers import API, RealTokenService, Reply, Starter, sidecar_get, wait_for

KEYS = ({"audience": API, "scope": "orders:read"}, {"audience": API, "scope": "orders:write"})


class AppLoad:
    """Workers asking for tokens and a readiness poller, until stopped; every status is recorded."""

    def __init__(self, socket_path: Path, workers: int = 4) -> None:
        self.socket_path = socket_path
        self.tokens: Counter[int] = Counter()
        self.ready: Counter[int] = Counter()
        self.failures: list[Reply] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._ask(i)) for i in range(workers)]
        self._tasks.append(asyncio.create_task(self._poll_ready()))

    async def _ask(self, worker: int) -> None:
        while not self._stop.is_set():
            reply = await sidecar_get(self.socket_path, "/v1/token", KEYS[worker % 2])
            self.tokens[reply.status] += 1
            if reply.status != 200:
                self.failures.append(reply)

    async def _poll_ready(self) -> None:
        while not self._stop.is_set():
            reply = await sidecar_get(self.socket_path, "/readyz")
            self.ready[reply.status] += 1
            if reply.status != 200:
                self.failures.append(reply)

    async def at_least(self, requests: int) -> None:
        target = sum(self.tokens.values()) + requests
        await wait_for(lambda: asyncio.sleep(0, sum(self.tokens.values()) >= target))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def _state(sidecar: RunningSidecar) -> str:
    assert sidecar.socket_path is not None
    return str((await sidecar_get(sidecar.socket_path, "/v1/status")).body["token_service"]["state"])


async def test_token_service_outage_under_load_keeps_readyz_200_and_fails_no_app_request(
    start: Starter, workload_source: InMemorySvidSource, token_service: RealTokenService, clock: ManualClock
) -> None:
    sidecar = await start(workload_source, token_service_url=token_service.issuer, clock=clock)
    first = [(await sidecar_get(sidecar.socket_path, "/v1/token", key)).body["access_token"] for key in KEYS]
    load = AppLoad(sidecar.socket_path)
    await load.at_least(50)
    await token_service.stop()
    await wait_for(lambda: _state_is(sidecar, "unreachable"))
    await load.at_least(50)
    clock.advance(290)  # past the refresh point: background refreshes fail, the valid tokens are still served
    await load.at_least(100)
    await load.stop()
    assert load.failures == []
    assert load.ready[200] > 0
    for key, token in zip(KEYS, first, strict=True):
        reply = await sidecar_get(sidecar.socket_path, "/v1/token", key)
        assert (reply.status, reply.body["access_token"]) == (200, token)
        assert reply.body["expires_in"] <= 10
    clock.advance(10)  # every cached token has expired: now the sidecar cannot serve its app
    ready = await sidecar_get(sidecar.socket_path, "/readyz")
    token = await sidecar_get(sidecar.socket_path, "/v1/token", KEYS[0])
    assert (ready.status, ready.body["error_description"]) == (503, "token service unreachable and no cached token")
    assert (token.status, token.body["error"]) == (503, "temporarily_unavailable")
    assert token.body["error_description"].startswith("token service unreachable")
    assert token.body["error_description"].endswith("and no cached token")


async def _state_is(sidecar: RunningSidecar, state: str) -> bool:
    return await _state(sidecar) == state


async def test_status_reports_the_svid_and_the_token_service_without_secrets(
    start: Starter, workload_source: InMemorySvidSource, token_service: RealTokenService
) -> None:
    sidecar = await start(workload_source, token_service_url=token_service.issuer)
    await wait_for(lambda: _state_is(sidecar, "reachable"))
    token = (await sidecar_get(sidecar.socket_path, "/v1/token", KEYS[0])).body["access_token"]
    reply = await sidecar_get(sidecar.socket_path, "/v1/status")
    assert reply.status == 200
    assert reply.body["ready"] is True
    assert reply.body["x509_svid"]["spiffe_id"] == str(workload_source.spiffe_id)
    assert reply.body["token_service"]["issuer"] == token_service.issuer
    assert reply.body["token_service"]["last_error"] is None
    assert reply.body["cached_tokens"] == 1
    assert token not in str(reply.body)


async def test_never_reachable_token_service_is_not_ready_with_reasons_and_logged_once(
    start: Starter, workload_source: InMemorySvidSource, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broker.sidecar")
    sidecar = await start(workload_source)  # https://127.0.0.1:1: nothing listens
    await wait_for(lambda: _state_is(sidecar, "unreachable"))
    for _ in range(3):  # each request is another failed contact: still one log line
        token = await sidecar_get(sidecar.socket_path, "/v1/token", KEYS[0])
        assert (token.status, token.body["error"]) == (503, "temporarily_unavailable")
        assert "no cached token" in token.body["error_description"]
    ready = await sidecar_get(sidecar.socket_path, "/readyz")
    assert (ready.status, ready.body["error_description"]) == (503, "token service unreachable and no cached token")
    status = (await sidecar_get(sidecar.socket_path, "/v1/status")).body
    assert status["ready"] is False
    assert status["token_service"]["consecutive_failures"] >= 4
    assert "ClientConnectorError" in status["token_service"]["last_error"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "has not been reachable yet" in warnings[0]


async def test_before_the_first_contact_the_sidecar_is_not_ready(
    start: Starter, workload_source: InMemorySvidSource
) -> None:
    fake = FakeTokenService(workload_source)
    never = asyncio.Event()
    fake.probe = never.wait  # type: ignore[method-assign]  # the first probe does not come back
    sidecar = await start(workload_source, token_service=fake)
    ready = await sidecar_get(sidecar.socket_path, "/readyz")
    assert (ready.status, ready.body["error_description"]) == (
        503,
        "token service not reachable yet and no cached token",
    )


async def test_traffic_to_the_token_service_replaces_probes(
    start: Starter, workload_source: InMemorySvidSource
) -> None:
    interval = 0.3
    fake = FakeTokenService(workload_source)
    sidecar = await start(workload_source, token_service=fake, probe_interval=interval)
    await wait_for(lambda: asyncio.sleep(0, fake.probes == 1))
    loop = asyncio.get_running_loop()
    contacts = [loop.time()]
    while contacts[-1] < contacts[0] + 3 * interval:  # steady exchanges (a new audience each: a cache miss)
        params = {"audience": f"https://a{len(contacts)}"}
        assert (await sidecar_get(sidecar.socket_path, "/v1/token", params)).status == 200
        contacts.append(loop.time())
        await asyncio.sleep(0.02)
    idle_gaps = sum(1 for a, b in itertools.pairwise(contacts) if b - a >= interval)  # a loaded machine
    assert fake.probes <= 1 + idle_gaps
    assert idle_gaps < 3  # else the test measured nothing
    assert len(fake.calls) == len(contacts) - 1


def test_health_logs_each_state_change_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="broker.sidecar.health")
    health = TokenServiceHealth("https://ts", rng=lambda: 1.0)
    for _ in range(3):
        health.failure("connect refused")
    health.success()
    health.success()
    for _ in range(3):
        health.failure("connect refused")
    assert [r.getMessage() for r in caplog.records] == [
        "token service https://ts has not been reachable yet: connect refused",
        "token service https://ts is reachable again",
        "token service https://ts is unreachable: connect refused",
    ]


def test_health_backs_off_exponentially_with_jitter_while_unreachable() -> None:
    now = [100.0]
    draws = iter([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    health = TokenServiceHealth("https://ts", monotonic=lambda: now[0], rng=lambda: next(draws), backoff_max=8.0)
    assert health.next_check(5.0) == 100.0  # unknown: probe at once
    delays = []
    for _ in range(6):
        health.failure("down")
        delays.append(health.next_check(5.0) - now[0])
    assert delays == [0.5, 2.0, 4.0, 8.0, 8.0, 8.0]  # jitter draws 0.0 -> half the ceiling
    now[0] += 1.0
    health.success()
    assert health.next_check(5.0) == 106.0  # reachable: interval after the last successful contact
