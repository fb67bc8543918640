"""Fixtures for tests against a real SPIRE deployment (``@pytest.mark.spire``).

The ``spire`` fixture is session-scoped: one spire-server and one spire-agent for the whole run. The
``spire_upstream`` fixture is a second, module-scoped deployment whose server has an UpstreamAuthority, so its
X509-SVIDs chain through an intermediate. Without the binaries both fail under CI (``CI=true``) and skip
locally, naming scripts/build-spire.sh.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.spire import BUILD_HINT, SpireBinaries, SpireDeployment, default_bin_dir


def _binaries() -> SpireBinaries:
    binaries = SpireBinaries.find()
    if binaries is None:
        message = f"SPIRE binaries not found in {default_bin_dir()}: {BUILD_HINT}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return binaries


@pytest.fixture(scope="session")
def spire() -> Iterator[SpireDeployment]:
    deployment = SpireDeployment(_binaries())
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.close()


@pytest.fixture(scope="module")
def spire_upstream() -> Iterator[SpireDeployment]:
    """SPIRE with the ``disk`` UpstreamAuthority: SVIDs come as leaf + SPIRE's intermediate, bundle = the root."""
    deployment = SpireDeployment(_binaries(), upstream_authority=True)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.close()
