"""A client from another ecosystem, panva's oauth4webapi on Node.js, against a real ``spiffe-broker server``.

oauth4webapi discovers the server (RFC 8414), obtains a certificate-bound token with ``client_credentials``
(RFC 6749 §4.4, RFC 8705 ``tls_client_auth``), introspects it as a resource server (RFC 7662), revokes it as its
holder (RFC 7009) and introspects it again; then the answers the RFCs define for everything else: a token that is
not one of ours, another client's token, a caller off the introspection allow-list, a caller without a certificate.
Then, without any certificate, a registered client: ``private_key_jwt`` (RFC 7523 §2.2, ``aud`` the issuer as
RFC 7523bis says) with a DPoP proof (RFC 9449) through the server's nonce challenge (§8), and the DPoP-bound token
at the demo API, which accepts it with a proof and refuses it without one. Every request and response goes
through oauth4webapi's own functions, so these tests check the wire contracts, not
our reading of them (oauth4webapi/client.mjs).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from broker.jose import thumbprint
from broker.jose.x5t import certificate_thumbprint
from broker.testing import API, WEB_ID
from tests.interop.o4w import (
    ADMIN_ID,
    KEYED_CLIENT_ID,
    KEYED_CLIENT_KID,
    RESOURCE_SERVER_ID,
    BrokerServer,
    OAuthClient,
    find_node,
    install_client,
    running_broker,
    running_demo_api,
)

OTHER_ID = "spiffe://example.org/ns/shop/sa/other"
SCOPE = "orders:read"


@pytest.fixture(scope="module")
def node() -> str:
    found = find_node()
    install_client()
    return found


@pytest.fixture(scope="module")
def server() -> Iterator[BrokerServer]:
    with running_broker() as running:
        yield running


@pytest.fixture(scope="module")
def o4w(node: str, server: BrokerServer) -> OAuthClient:
    return OAuthClient(node, server)


@pytest.fixture(scope="module")
def demo_api(server: BrokerServer) -> Iterator[str]:
    with running_demo_api(server) as url:
        yield url


def dpop_flow(o4w: OAuthClient, demo_api: str, key: Path) -> dict[str, Any]:
    return o4w.run("dpop-flow", None, client_id=KEYED_CLIENT_ID, assertion_key=str(key),
                   assertion_kid=KEYED_CLIENT_KID, audience=API, scope=SCOPE, api_url=demo_api,
                   api_id=RESOURCE_SERVER_ID)  # fmt: skip


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def new_token(o4w: OAuthClient) -> str:
    result = o4w.ok("token", WEB_ID, audience=API, scope=SCOPE)
    assert result["token_type"] == "bearer"  # oauth4webapi lowercases it
    token: str = result["access_token"]
    return token


def test_oauth4webapi_discovers_both_endpoints_and_their_mtls_auth_method(o4w: OAuthClient) -> None:
    metadata = o4w.ok("discover", None)
    issuer = o4w.server.issuer
    assert metadata["issuer"] == issuer
    assert metadata["revocation_endpoint"] == f"{issuer}/revoke"
    assert metadata["introspection_endpoint"] == f"{issuer}/introspect"
    assert metadata["revocation_endpoint_auth_methods_supported"] == ["tls_client_auth"]
    assert metadata["introspection_endpoint_auth_methods_supported"] == ["tls_client_auth"]


def test_token_introspected_active_then_revoked_by_its_holder_then_introspected_inactive(o4w: OAuthClient) -> None:
    token = new_token(o4w)
    introspected = o4w.ok("introspect", RESOURCE_SERVER_ID, token=token, token_type_hint="access_token")
    assert introspected["cache_control"] == "no-store"
    body = introspected["body"]
    assert body["active"] is True
    assert (body["iss"], body["sub"], body["client_id"]) == (o4w.server.issuer, WEB_ID, WEB_ID)
    assert (body["aud"], body["scope"], body["token_type"]) == (API, SCOPE, "Bearer")
    assert isinstance(body["jti"], str) and body["exp"] > body["iat"]
    leaf = x509.load_pem_x509_certificate(o4w.server.svid_files(WEB_ID)[0].read_bytes())
    thumbprint = certificate_thumbprint(leaf.public_bytes(Encoding.DER))
    assert body["cnf"] == {"x5t#S256": thumbprint}, "RFC 8705 §3.2: the holder's certificate"
    assert o4w.ok("revoke", WEB_ID, token=token, token_type_hint="access_token") == {"status": 200}
    after = o4w.ok("introspect", RESOURCE_SERVER_ID, token=token)
    assert after["body"] == {"active": False}, "RFC 7662 §2.2: an inactive token says nothing else"
    assert o4w.ok("revoke", WEB_ID, token=token) == {"status": 200}, "revoking twice is not an error"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("not-a-token", id="malformed"),
        pytest.param("eyJhbGciOiJFUzI1NiIsImtpZCI6IngiLCJ0eXAiOiJhdCtqd3QifQ.e30.c2ln", id="forged"),
    ],
)
def test_a_token_that_is_not_ours_is_revoked_with_200_and_introspected_inactive(o4w: OAuthClient, token: str) -> None:
    assert o4w.ok("revoke", WEB_ID, token=token, token_type_hint="refresh_token") == {"status": 200}
    assert o4w.ok("introspect", RESOURCE_SERVER_ID, token=token)["body"] == {"active": False}


def test_another_clients_token_is_refused_invalid_grant_and_an_admin_may_revoke_it(o4w: OAuthClient) -> None:
    token = new_token(o4w)
    refused = o4w.run("revoke", OTHER_ID, token=token)
    assert not refused["ok"]
    error = refused["error"]
    assert (error["name"], error["status"], error["error"]) == ("ResponseBodyError", 400, "invalid_grant")
    assert o4w.ok("introspect", RESOURCE_SERVER_ID, token=token)["body"]["active"] is True, "nothing changed"
    assert o4w.ok("revoke", ADMIN_ID, token=token) == {"status": 200}
    assert o4w.ok("introspect", RESOURCE_SERVER_ID, token=token)["body"] == {"active": False}


def test_a_caller_off_the_introspection_allow_list_is_refused_access_denied(o4w: OAuthClient) -> None:
    refused = o4w.run("introspect", WEB_ID, token=new_token(o4w))
    assert not refused["ok"]
    error = refused["error"]
    assert (error["name"], error["status"], error["error"]) == ("ResponseBodyError", 403, "access_denied")


@pytest.mark.parametrize("op", ["introspect", "revoke"])
def test_a_caller_without_a_certificate_gets_a_401_challenge(o4w: OAuthClient, op: str) -> None:
    refused = o4w.run(op, None, token="anything")
    assert not refused["ok"]
    error = refused["error"]
    assert (error["name"], error["status"]) == ("WWWAuthenticateChallengeError", 401)
    assert error["challenges"][0]["scheme"] == "tls"


def test_private_key_jwt_with_dpop_through_a_nonce_challenge_gets_a_jkt_bound_token(
    o4w: OAuthClient, demo_api: str
) -> None:
    report = dpop_flow(o4w, demo_api, o4w.server.keyed_client_key)
    assert report["ok"], f"oauth4webapi dpop-flow failed: {report['error']}\n{o4w.server.log_tail()}"
    flow = report["result"]
    assert flow["nonce_retries"] == 1, "RFC 9449 §8: the first proof has no nonce, the server asks for one"
    token = flow["token"]
    assert token["token_type"] == "dpop", "RFC 9449 §5: token_type DPoP (oauth4webapi lowercases it)"
    claims = claims_of(token["access_token"])
    assert (claims["iss"], claims["sub"], claims["client_id"]) == (o4w.server.issuer, WEB_ID, KEYED_CLIENT_ID)
    assert (claims["aud"], claims["scope"]) == (API, SCOPE)
    assert claims["cnf"] == {"jkt": thumbprint(flow["dpop_jwk"])}, "RFC 9449 §6.1: bound to the proof's key"


def test_the_demo_api_accepts_the_dpop_token_with_a_proof_and_refuses_it_without_one(
    o4w: OAuthClient, demo_api: str
) -> None:
    report = dpop_flow(o4w, demo_api, o4w.server.keyed_client_key)
    assert report["ok"], f"oauth4webapi dpop-flow failed: {report['error']}\n{o4w.server.log_tail()}"
    flow = report["result"]
    accepted = flow["with_proof"]
    assert accepted["status"] == 200, accepted
    assert json.loads(accepted["body"]) == {"hello": WEB_ID, "scope": SCOPE}
    without_proof, as_bearer = flow["dpop_without_proof"], flow["as_bearer"]
    assert without_proof["status"] == 401, without_proof
    assert without_proof["www_authenticate"].startswith("DPoP "), "RFC 9449 §7.1: a DPoP challenge"
    assert as_bearer["status"] == 401, "RFC 9449 §7.2: a DPoP-bound token is not a bearer token"
    assert 'error="invalid_token"' in as_bearer["www_authenticate"], as_bearer


def test_an_assertion_signed_with_a_key_the_client_did_not_register_is_invalid_client(
    o4w: OAuthClient, demo_api: str, tmp_path: Path
) -> None:
    other = tmp_path / "other.key"
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))  # fmt: skip
    refused = dpop_flow(o4w, demo_api, other)
    assert not refused["ok"]
    error = refused["error"]
    assert (error["name"], error["status"]) == ("WWWAuthenticateChallengeError", 401), error
    # RFC 6749 §5.2: invalid_client may be a 401 naming the schemes the server takes (here mutual TLS); oauth4webapi
    # then raises the challenge and keeps the body to itself.
    assert error["challenges"] == [{"scheme": "tls", "parameters": {"realm": "spiffe-broker"}}], error
