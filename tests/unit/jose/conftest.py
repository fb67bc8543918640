"""Fixtures for the JOSE core's tests: signing keys for every algorithm of RFC 7518 §3 that the broker allows."""

from __future__ import annotations

import pytest

from tests.jose_helpers import Keys, make_keys


@pytest.fixture(scope="session")
def jose_keys() -> Keys:
    """Signing keys for RS/PS/ES 256/384/512 (generated once: RSA key generation is slow)."""
    return make_keys()
