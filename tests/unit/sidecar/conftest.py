"""Fixtures for sidecar tests: one dev CA, the broker's and the workload's in-memory SVID sources."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.sidecar.service import RunningSidecar, start_sidecar
from broker.testing import ManualClock
from tests.unit.sidecar.sidecar_helpers import (
    BROKER_ID,
    FAST_RETRY,
    WEB_ID,
    RealTokenService,
    Starter,
    short_tmpdir,
    start_real_token_service,
)


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
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def tmp_short() -> Iterator[Path]:
    with short_tmpdir() as directory:
        yield directory


@pytest.fixture
async def token_service(broker_source: InMemorySvidSource) -> AsyncIterator[RealTokenService]:
    service = await start_real_token_service(broker_source)
    yield service
    await service.stop()


@pytest.fixture
async def start(tmp_short: Path) -> AsyncIterator[Starter]:
    """Start sidecars on a socket in a short temp dir; all are stopped at the end."""
    running: list[RunningSidecar] = []

    async def starter(source: InMemorySvidSource, **kwargs: Any) -> RunningSidecar:
        kwargs.setdefault("socket_path", tmp_short / "sidecar.sock")
        kwargs.setdefault("token_service_url", "https://127.0.0.1:1")
        kwargs.setdefault("token_service_id", BROKER_ID)
        kwargs.setdefault("probe_interval", 0.05)
        kwargs.setdefault("retry", FAST_RETRY)
        sidecar = await start_sidecar(source=source, **kwargs)
        running.append(sidecar)
        return sidecar

    yield starter
    for sidecar in running:
        await sidecar.aclose()
