"""Fixtures for token tests: a dev CA, a client X.509-SVID, a key store, the endpoint and an access-token decoder."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from broker.devtools.devca import DevCA
from broker.identity.spiffeid import SpiffeId
from broker.identity.svid import X509Svid
from broker.tokens.endpoint import TokenEndpoint
from broker.tokens.issuer import AuthenticatedClient
from broker.tokens.keys import InMemoryKeyStore, KeyStore
from tests.unit.tokens.endpoint_helpers import make_endpoint

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


@pytest.fixture
def key_store() -> InMemoryKeyStore:
    return InMemoryKeyStore()


@pytest.fixture
def endpoint(ca: DevCA, key_store: InMemoryKeyStore) -> TokenEndpoint:
    """The standard endpoint, trusting ``ca``'s JWT bundle, under :data:`endpoint_helpers.POLICY`."""
    return make_endpoint(key_store=key_store, jwt_bundles=lambda: {ca.trust_domain: ca.jwt_bundle()})


Decoder = Callable[[str, KeyStore], tuple[dict[str, Any], dict[str, Any]]]


@pytest.fixture
def decode() -> Decoder:
    """Verify an access token's ES256 signature with the store's published key named by ``kid``."""

    def run(token: str, store: KeyStore) -> tuple[dict[str, Any], dict[str, Any]]:
        keys = {k.kid: ECKey.import_key(k.private_key.public_key()) for k in store.published_keys()}
        kid = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"]
        verified = jwt.decode(token, keys[kid], algorithms=["ES256"])
        return dict(verified.header), dict(verified.claims)

    return run
