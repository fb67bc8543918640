"""Fixtures for the app clients: a real dev Workload API (this uid registered) and a scripted fake sidecar."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.devtools.devca import DevCA
from broker.devtools.workload_api import InMemoryEntryStore, RegistrationEntry, WorkloadApiServer, WorkloadApiThread
from broker.testing import short_dir
from tests.unit.appclient.appclient_helpers import APP_ID, FakeSidecar


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with short_dir("ac-") as directory:
        yield directory


@pytest.fixture
def workload_api(sock_dir: Path) -> Iterator[str]:
    """The dev Workload API with this process's uid registered as APP_ID; yields its address."""
    entries = InMemoryEntryStore([RegistrationEntry.of(APP_ID, [f"unix:uid:{os.geteuid()}"])])
    server = WorkloadApiServer(ca=DevCA.ephemeral("example.org"), entries=entries, socket_path=sock_dir / "api.sock")
    thread = WorkloadApiThread(server)
    thread.start()
    try:
        yield f"unix://{server.socket_path}"
    finally:
        thread.stop()


@pytest.fixture
def sidecar(sock_dir: Path) -> Iterator[FakeSidecar]:
    fake = FakeSidecar(sock_dir / "token.sock")
    try:
        yield fake
    finally:
        fake.close()
