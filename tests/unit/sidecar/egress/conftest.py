"""Fixtures for egress tests: the external API (HTTPS, its own CA), the fake token service (mTLS), the proxy.

Every test here also checks that no secret reached a log line, at any level (DEBUG included).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from broker.identity.memory import InMemorySvidSource
from tests.unit.sidecar.egress.egress_helpers import App, running_egress
from tests.unit.sidecar.egress.fake_apikeys import OTHER_SECRET, SECRET, FakeApiKeys, entry, fake_apikeys
from tests.unit.sidecar.egress.target_server import TargetServer, TargetTls, target_server, target_tls


@pytest.fixture(autouse=True)
def no_secret_in_any_log_line(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for secret in (SECRET, OTHER_SECRET):
        assert secret not in caplog.text
        assert all(secret not in str(record.args) for record in caplog.records)


@pytest.fixture
def tls(tmp_path: Path) -> TargetTls:
    return target_tls(tmp_path)


@pytest.fixture
async def target(tls: TargetTls) -> AsyncIterator[TargetServer]:
    async with target_server(tls.trusted) as server:
        yield server


@pytest.fixture
async def apikeys(broker_source: InMemorySvidSource, target: TargetServer) -> AsyncIterator[FakeApiKeys]:
    """The fake token service with two exceptions: ``stripe`` (Authorization: Bearer, under /v1/ of
    api.example.test) and ``maps`` (query parameter ``key`` on other.example.test)."""
    async with fake_apikeys(broker_source) as fake:
        fake.add(entry("stripe", "api.example.test", target.port, prefix="/v1/"), SECRET)
        fake.add(entry("maps", "other.example.test", target.port, kind="query", slot="key", template="{secret}"),
                 OTHER_SECRET)  # fmt: skip
        yield fake


@pytest.fixture
async def app(
    apikeys: FakeApiKeys, workload_source: InMemorySvidSource, tmp_short: Path, tls: TargetTls
) -> AsyncIterator[App]:
    async with running_egress(apikeys, workload_source, tmp_short, tls.ca_file) as running:
        yield running
