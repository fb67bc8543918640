"""Fixtures for token service tests: real TLS on loopback with SVIDs from dev CAs (see token_service_helpers)."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import TrustDomain
from broker.server.service import start_token_service
from broker.tokens.keys import FileKeyStore
from broker.tokens.policy import FilePolicyStore
from tests.unit.server.token_service_helpers import BROKER_ID, ISSUER, POLICY, Broker


@pytest.fixture
def ca() -> DevCA:
    return DevCA.ephemeral("example.org")


@pytest.fixture
def other_ca() -> DevCA:
    return DevCA.ephemeral("other.org")


@pytest.fixture
def source(ca: DevCA, other_ca: DevCA) -> InMemorySvidSource:
    return InMemorySvidSource(ca, BROKER_ID, federated={TrustDomain("other.org"): other_ca})


@pytest.fixture
def state_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="tsvc-") as directory:
        yield Path(directory)


@pytest.fixture
def policy_path(state_dir: Path) -> Path:
    path = state_dir / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
async def broker(source: InMemorySvidSource, policy_path: Path, state_dir: Path) -> AsyncIterator[Broker]:
    service = await start_token_service(
        source=source,
        policy_store=FilePolicyStore(policy_path),
        key_store=FileKeyStore(state_dir),
        listen_host="127.0.0.1",
        listen_port=0,
        issuer=ISSUER,
        health_port=0,
        policy_check_interval=0.05,
    )
    yield Broker(service, source, policy_path, state_dir)
    await service.aclose()
