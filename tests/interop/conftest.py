"""Fixtures for the go-spiffe interop tests (helpers in gointerop.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.devstack_process import DevProcess, running_dev
from tests.interop.gointerop import GoClient, build_goclient, find_go


@pytest.fixture(scope="session")
def goclient() -> Iterator[GoClient]:
    """The go-spiffe v2 client, built once per session. No Go toolchain: a failure in CI, a skip locally."""
    go = find_go()
    if go is None:
        message = "no Go toolchain ('go' not on PATH): the go-spiffe interop tests need one to build their client"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    out_dir = Path(tempfile.mkdtemp(prefix="sb-goclient-", dir="/tmp"))
    try:
        yield GoClient(build_goclient(go, out_dir))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    """`spiffe-broker dev` with default lifetimes (the token binding must not race an SVID rotation)."""
    with running_dev() as process:
        yield process


@pytest.fixture
def rotating_dev() -> Iterator[DevProcess]:
    """`spiffe-broker dev` whose workload X.509-SVIDs live 4 s (re-issued at half-life, every 2 s)."""
    with running_dev("--x509-ttl", "4") as process:
        yield process
