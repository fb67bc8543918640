"""Fixtures for verifier tests: a signing key, client certificates from a dev CA, a verifier with static keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from broker.devtools.devca import DevCA
from broker.identity.spiffeid import SpiffeId
from broker.verify import AccessTokenVerifier, StaticJwksProvider, parse_jwks
from tests.unit.verify.verify_helpers import AUDIENCE, ISSUER, NOW, Signer


@pytest.fixture(scope="module")
def ca() -> DevCA:
    return DevCA.ephemeral("example.org")


def _der(ca: DevCA, path: str) -> bytes:
    svid = ca.issue_x509_svid(SpiffeId.parse(f"spiffe://example.org{path}"), ttl=3600)
    return svid.leaf.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def cert_der(ca: DevCA) -> bytes:
    return _der(ca, "/ns/shop/sa/web")


@pytest.fixture(scope="module")
def other_cert_der(ca: DevCA) -> bytes:
    return _der(ca, "/ns/shop/sa/other")


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture
def verifier(signer: Signer) -> AccessTokenVerifier:
    jwks = StaticJwksProvider(parse_jwks({"keys": [signer.jwk(alg="ES256")]}))
    return AccessTokenVerifier(issuer=ISSUER, audience=AUDIENCE, jwks=jwks, clock=lambda: NOW)


@pytest.fixture
def tmp_short() -> Iterator[Path]:
    import shutil
    import tempfile

    directory = tempfile.mkdtemp(dir="/tmp", prefix="vf-")
    try:
        yield Path(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
