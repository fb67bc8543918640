"""Fixtures for the dev Workload API tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.devtools.devca import DevCA
from broker.testing import short_dir

from ._support import TD


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with short_dir("wl") as path:
        yield path


@pytest.fixture
def ca() -> DevCA:
    return DevCA.ephemeral(TD)
