"""Fixtures for token tests: a dev CA, a client X.509-SVID and an access-token decoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from broker.identity.devca import DevCA
from broker.identity.spiffeid import SpiffeId
from broker.identity.svid import X509Svid
from broker.tokens.issuer import AuthenticatedClient
from broker.tokens.keys import KeyStore

CLIENT_ID = SpiffeId.parse("spiffe://example.org/ns/shop/sa/web")


@pytest.fixture
def ca() -> DevCA:
    return DevCA.ephemeral("example.org")


@pytest.fixture
def client_svid(ca: DevCA) -> X509Svid:
    return ca.issue_x509_svid(CLIENT_ID, ttl=3600)


@pytest.fixture
def client(client_svid: X509Svid) -> AuthenticatedClient:
    return AuthenticatedClient(spiffe_id=client_svid.spiffe_id, leaf=client_svid.leaf)


Decoder = Callable[[str, KeyStore], tuple[dict[str, Any], dict[str, Any]]]


@pytest.fixture
def decode() -> Decoder:
    """Verify an access token's ES256 signature with the store's published key named by ``kid``."""

    def run(token: str, store: KeyStore) -> tuple[dict[str, Any], dict[str, Any]]:
        header = jwt.decode(token, ECKey.import_key(store.active_key().public_jwk()), algorithms=["ES256"]).header
        keys = {k.kid: k for k in store.published_keys()}
        verified = jwt.decode(token, ECKey.import_key(keys[header["kid"]].public_jwk()), algorithms=["ES256"])
        return dict(verified.header), dict(verified.claims)

    return run
