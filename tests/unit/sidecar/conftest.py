"""Fixtures for sidecar tests: one dev CA, the broker's and the workload's in-memory SVID sources."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sidecar_helpers import BROKER_ID, WEB_ID, FakeClock, RealTokenService, short_tmpdir, start_real_token_service

from broker.identity.devca import DevCA
from broker.identity.source import InMemorySvidSource


@pytest.fixture
def ca() -> DevCA:
    return DevCA.ephemeral("example.org")


@pytest.fixture
def broker_source(ca: DevCA) -> InMemorySvidSource:
    return InMemorySvidSource(ca, BROKER_ID)


@pytest.fixture
def workload_source(ca: DevCA) -> InMemorySvidSource:
    return InMemorySvidSource(ca, WEB_ID)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tmp_short() -> Iterator[Path]:
    with short_tmpdir() as directory:
        yield directory


@pytest.fixture
async def token_service(broker_source: InMemorySvidSource) -> AsyncIterator[RealTokenService]:
    service = await start_real_token_service(broker_source)
    yield service
    await service.stop()
