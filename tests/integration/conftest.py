"""Fixtures for tests against a real SPIRE deployment (``@pytest.mark.spire``).

The ``spire`` fixture is session-scoped: one spire-server and one spire-agent for the whole run. Without the
binaries the fixture fails under CI (``CI=true``) and skips locally, both naming scripts/build-spire.sh.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# tests/integration has no __init__.py, so pytest puts this directory on sys.path (rootdir-less "prepend").
from spire import BUILD_HINT, SpireBinaries, SpireDeployment, default_bin_dir


@pytest.fixture(scope="session")
def spire() -> Iterator[SpireDeployment]:
    binaries = SpireBinaries.find()
    if binaries is None:
        message = f"SPIRE binaries not found in {default_bin_dir()}: {BUILD_HINT}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    deployment = SpireDeployment(binaries)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.close()
