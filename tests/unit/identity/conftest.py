"""Shared fixtures for the SPIFFE primitive tests: two dev CAs in different trust domains, JWS signing keys."""

from __future__ import annotations

import pytest

from broker.devtools.devca import DevCA
from broker.identity.spiffeid import TrustDomain
from tests.jose_helpers import Keys, make_keys


@pytest.fixture
def ca() -> DevCA:
    """The dev CA of ``example.org``: the trust domain the tests' SVIDs belong to."""
    return DevCA.ephemeral(TrustDomain("example.org"))


@pytest.fixture
def other_ca() -> DevCA:
    """The dev CA of ``other.test``: a second, federated trust domain that must not vouch for ``example.org``."""
    return DevCA.ephemeral(TrustDomain("other.test"))


@pytest.fixture(scope="session")
def jose_keys() -> Keys:
    """Signing keys for every JWT-SVID algorithm (generated once: RSA key generation is slow)."""
    return make_keys()
