"""Shared fixtures for the dev tools tests: the dev CA of ``example.org``."""

from __future__ import annotations

import pytest

from broker.devtools.devca import DevCA
from broker.identity.spiffeid import TrustDomain


@pytest.fixture
def ca() -> DevCA:
    """The dev CA of ``example.org``: the trust domain the tests' SVIDs belong to."""
    return DevCA.ephemeral(TrustDomain("example.org"))
