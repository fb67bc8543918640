"""Fixtures for the end-to-end tests: one `spiffe-broker dev` per module, logging at DEBUG."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.devstack_process import DevProcess, running_dev


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    with running_dev(global_args=("--log-level", "DEBUG")) as process:
        yield process
