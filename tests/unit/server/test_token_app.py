"""End-to-end tests of the token service over real TLS on loopback (metadata, JWKS, /token)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import ECKey

from broker.devtools.devca import DevCA
from broker.identity.svid import X509Svid
from broker.oauth.constants import GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_JWT
from broker.server.state import JWKS_KEYS
from broker.tokens.keys import FileKeyStore
from tests.unit.server.token_service_helpers import API, CLIENT_ID, ISSUER, Broker, client_context, request


@pytest.fixture
def client_svid(ca: DevCA) -> X509Svid:
    return ca.issue_x509_svid(CLIENT_ID, ttl=3600)


def exchange_form(subject_token: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": GRANT_TOKEN_EXCHANGE,
        "subject_token": subject_token,
        "subject_token_type": TOKEN_TYPE_JWT,
        "audience": API,
        **extra,
    }


async def verify_token(broker: Broker, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify an access token against the service's published JWKS (as a resource server would)."""
    jwks = (await request(client_context(None, broker.source._ca), "GET", broker.url + "/jwks.json")).body
    kid = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"]
    key = next(k for k in jwks["keys"] if k["kid"] == kid)
    decoded = jwt.decode(token, ECKey.import_key(key), algorithms=["ES256"])
    return dict(decoded.header), dict(decoded.claims)


async def test_metadata_has_rfc8414_required_and_mtls_fields(broker: Broker, ca: DevCA) -> None:
    reply = await request(client_context(None, ca), "GET", broker.url + "/.well-known/oauth-authorization-server")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/json")
    assert reply.body == {
        "issuer": ISSUER,
        "token_endpoint": ISSUER + "/token",
        "jwks_uri": ISSUER + "/jwks.json",
        "response_types_supported": [],
        "grant_types_supported": [GRANT_TOKEN_EXCHANGE, GRANT_CLIENT_CREDENTIALS],
        "token_endpoint_auth_methods_supported": ["tls_client_auth"],
        "tls_client_certificate_bound_access_tokens": True,
    }


async def test_jwks_publishes_the_signing_key_without_private_members(broker: Broker, ca: DevCA) -> None:
    reply = await request(client_context(None, ca), "GET", broker.url + "/jwks.json")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/jwk-set+json")
    (key,) = reply.body["keys"]
    assert key["kid"] == FileKeyStore(broker.state_dir).active_key().kid
    assert (key["alg"], key["use"], key["kty"], key["crv"]) == ("ES256", "sig", "EC", "P-256")
    assert "d" not in key


async def test_token_exchange_issues_certificate_bound_rfc9068_token(
    broker: Broker, ca: DevCA, client_svid: X509Svid
) -> None:
    subject = ca.mint_jwt_svid(CLIENT_ID, [ISSUER], ttl=300).token
    before = time.time()
    reply = await request(
        client_context(client_svid, ca), "POST", broker.url + "/token", data=exchange_form(subject, scope="orders:read")
    )
    assert reply.status == 200, reply.body
    assert reply.headers["Cache-Control"] == "no-store" and reply.headers["Pragma"] == "no-cache"
    body = reply.body
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 120, "orders:read")
    header, claims = await verify_token(broker, body["access_token"])
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": FileKeyStore(broker.state_dir).active_key().kid}
    digest = hashlib.sha256(client_svid.leaf.public_bytes(serialization.Encoding.DER)).digest()
    assert claims["cnf"] == {"x5t#S256": base64.urlsafe_b64encode(digest).rstrip(b"=").decode()}
    assert (claims["iss"], claims["sub"], claims["client_id"]) == (ISSUER, str(CLIENT_ID), str(CLIENT_ID))
    assert (claims["aud"], claims["scope"]) == (API, "orders:read")
    assert int(before) <= claims["iat"] <= time.time() and claims["exp"] == claims["iat"] + 120
    assert claims["exp"] <= client_svid.not_after.timestamp()
    assert len(base64.urlsafe_b64decode(claims["jti"] + "==")) == 16
    assert broker.service.issuer.issued_count == 1


async def test_token_lifetime_never_passes_client_certificate_not_after(broker: Broker, ca: DevCA) -> None:
    short = ca.issue_x509_svid(CLIENT_ID, ttl=30)
    reply = await request(
        client_context(short, ca),
        "POST",
        broker.url + "/token",
        data={"grant_type": GRANT_CLIENT_CREDENTIALS, "audience": API},
    )
    _, claims = await verify_token(broker, reply.body["access_token"])
    assert claims["exp"] == int(short.not_after.timestamp())
    assert reply.body["expires_in"] <= 30


async def test_client_credentials_issues_token_for_the_certificate_identity(
    broker: Broker, ca: DevCA, client_svid: X509Svid
) -> None:
    form = {"grant_type": GRANT_CLIENT_CREDENTIALS, "client_id": str(CLIENT_ID), "resource": API}
    reply = await request(client_context(client_svid, ca), "POST", broker.url + "/token", data=form)
    assert reply.status == 200, reply.body
    assert "issued_token_type" not in reply.body
    _, claims = await verify_token(broker, reply.body["access_token"])
    assert claims["sub"] == str(CLIENT_ID) and claims["cnf"]["x5t#S256"] == client_svid.x5t_s256()


async def test_rotated_signing_key_signs_new_tokens_and_old_key_stays_published(
    broker: Broker, ca: DevCA, client_svid: X509Svid
) -> None:
    store = broker.service.app[JWKS_KEYS]
    assert isinstance(store, FileKeyStore)
    old, new = store.active_key(), store.rotate()
    reply = await request(
        client_context(client_svid, ca),
        "POST",
        broker.url + "/token",
        data={"grant_type": GRANT_CLIENT_CREDENTIALS, "audience": API},
    )
    header, _ = await verify_token(broker, reply.body["access_token"])
    assert header["kid"] == new.kid
    jwks = (await request(client_context(None, ca), "GET", broker.url + "/jwks.json")).body
    assert [k["kid"] for k in jwks["keys"]] == [new.kid, old.kid]
