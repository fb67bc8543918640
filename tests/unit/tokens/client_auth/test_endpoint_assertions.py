"""Tests for client assertions at the token endpoint (broker.tokens.endpoint), as the HTTP handler drives it:
``authenticate(context)`` before the body, then ``handle(form, transport, context)``.

One authentication method per request (RFC 6749 §2.3), the RFC 7521 §4.2 parameters, failing closed when the
replay cache cannot record, the binding of the token issued (RFC 8705 §3, RFC 9449 §6.1), and the metadata.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from broker.devtools.devca import DevCA
from broker.errors import InvalidClientError, OAuthError
from broker.identity.spiffeid import SpiffeId
from broker.oauth.binding import Jkt
from broker.oauth.constants import ASSERTION_TYPE_JWT_BEARER, ASSERTION_TYPE_JWT_SPIFFE
from broker.tokens.client_auth import RequestContext
from broker.tokens.issuer import AuthenticatedClient
from tests.unit.tokens.client_auth.assertion_helpers import (
    CLIENT_ID,
    LEGACY,
    WEB,
    ClientKey,
    Service,
    UnavailableReplay,
    assertion_form,
    bearer_assertion,
    dpop_proof,
    make_service,
    no_certificate,
    spiffe_assertion,
    spiffe_form,
)
from tests.unit.tokens.endpoint_helpers import API, cc_form


@pytest.fixture
def key() -> ClientKey:
    return ClientKey()


@pytest.fixture
def service(ca: DevCA, key: ClientKey) -> Service:
    return make_service(ca, client_key=key)


def legacy_client(ca: DevCA) -> AuthenticatedClient:
    svid = ca.issue_x509_svid(SpiffeId.parse(LEGACY), ttl=3600)
    return AuthenticatedClient(spiffe_id=svid.spiffe_id, leaf=svid.leaf)


def test_tls_without_a_certificate_is_left_to_the_body_when_assertions_are_served(service: Service) -> None:
    assert service.endpoint.authenticate(no_certificate()) is None


def test_a_request_without_tls_is_refused_before_the_body(service: Service) -> None:
    with pytest.raises(InvalidClientError) as caught:
        service.endpoint.authenticate(RequestContext())
    assert caught.value.description == "mutual TLS with an X.509-SVID is required"
    assert len(service.audit.refusals) == 1


async def test_assertion_with_basic_credentials_is_invalid_client(service: Service, key: ClientKey) -> None:
    error = await service.refused(
        assertion_form(bearer_assertion(key)), no_certificate(authorization="Basic YmlsbGluZzpzZWNyZXQ=")
    )
    assert error.error == "invalid_client"
    assert error.headers["WWW-Authenticate"] == 'Basic realm="spiffe-broker"'
    assert "client assertion (RFC 7523)" in error.description


async def test_assertion_and_certificate_of_different_clients_are_invalid_client(
    service: Service, key: ClientKey, client: AuthenticatedClient
) -> None:
    error = await service.refused(assertion_form(bearer_assertion(key)), transport=client)
    assert (error.error, error.description) == (
        "invalid_client",
        "client assertion and client certificate name different clients",
    )


async def test_assertion_and_certificate_of_the_same_client_bind_to_the_certificate(
    service: Service, ca: DevCA, key: ClientKey, decode: Any
) -> None:
    legacy = legacy_client(ca)
    response = await service.request(assertion_form(bearer_assertion(key)), transport=legacy)
    _, claims = decode(response.token.token, service.key_store)
    assert (claims["sub"], claims["client_id"]) == (LEGACY, CLIENT_ID)
    assert claims["cnf"] == {"x5t#S256": legacy.x5t_s256()}
    assert response.token_type == "Bearer"


@pytest.mark.parametrize(
    ("form", "error"),
    [
        (assertion_form(None), "invalid_request"),
        (assertion_form("x.y.z", assertion_type=None), "invalid_request"),
        (assertion_form("", ASSERTION_TYPE_JWT_BEARER), "invalid_request"),
        (assertion_form("x.y.z", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"), "invalid_client"),
        ({**assertion_form("x.y.z"), "client_assertion": ["a.b.c", "d.e.f"]}, "invalid_request"),
        (cc_form(), "invalid_client"),
    ],
    ids=[
        "type-without-assertion",
        "assertion-without-type",
        "empty-assertion",
        "unknown-assertion-type",
        "repeated-assertion",
        "no-client-authentication",
    ],
)
async def test_assertion_parameters_out_of_rule_are_refused(
    service: Service, form: dict[str, list[str]], error: str
) -> None:
    refused = await service.refused(form)
    assert refused.error == error
    assert service.audit.refusals[-1] is refused


@pytest.mark.parametrize("kind", ["jwt-bearer", "jwt-spiffe"])
async def test_unavailable_replay_cache_is_temporarily_unavailable(ca: DevCA, key: ClientKey, kind: str) -> None:
    replay = UnavailableReplay()
    service = make_service(ca, client_key=key, replay=replay, allow_bearer=True)
    form = assertion_form(bearer_assertion(key)) if kind == "jwt-bearer" else spiffe_form(spiffe_assertion(ca))
    error = await service.refused(form)
    assert error.error == "temporarily_unavailable"
    assert replay.calls == 1


async def test_unavailable_replay_cache_refuses_a_dpop_proof_too(ca: DevCA, client: AuthenticatedClient) -> None:
    service = make_service(ca, replay=UnavailableReplay())
    proof = dpop_proof(ec.generate_private_key(ec.SECP256R1()))
    error = await service.refused(cc_form(), RequestContext(dpop=(proof,)), transport=client)
    assert error.error == "temporarily_unavailable"


@pytest.mark.parametrize("kind", ["jwt-bearer", "jwt-spiffe"])
async def test_bearer_token_is_refused_unless_allowed(ca: DevCA, key: ClientKey, kind: str, decode: Any) -> None:
    def form() -> dict[str, list[str]]:
        return assertion_form(bearer_assertion(key)) if kind == "jwt-bearer" else spiffe_form(spiffe_assertion(ca))

    error = await make_service(ca, client_key=key).refused(form())
    assert error.error == "invalid_request"
    assert "sender-constrained" in error.description
    allowing = make_service(ca, client_key=key, allow_bearer=True)
    response = await allowing.request(form())
    assert "cnf" not in decode(response.token.token, allowing.key_store)[1]
    assert response.token_type == "Bearer"


async def test_jwt_svid_assertion_with_dpop_proof_gets_a_dpop_bound_token(
    service: Service, ca: DevCA, decode: Any
) -> None:
    dpop_key = ec.generate_private_key(ec.SECP256R1())
    response = await service.request(spiffe_form(spiffe_assertion(ca)), no_certificate(dpop=(dpop_proof(dpop_key),)))
    claims = decode(response.token.token, service.key_store)[1]
    assert (claims["sub"], claims["client_id"], claims["aud"]) == (WEB, WEB, API)
    assert claims["cnf"] == {"jkt": Jkt.of_public_key(dpop_key.public_key()).value}
    assert response.to_json()["token_type"] == "DPoP"


@pytest.mark.parametrize("kind", ["jwt-bearer", "jwt-spiffe"])
async def test_use_dpop_nonce_comes_before_the_assertion_so_the_retry_may_resend_it(
    ca: DevCA, key: ClientKey, kind: str
) -> None:
    """RFC 9449 §8: the server asks for a retry with its nonce; the nonce is checked before the assertion's jti
    is recorded, so the retry can carry the same assertion (a SPIRE agent hands out the same JWT-SVID)."""
    service = make_service(ca, client_key=key, nonce=True, reuse="single-use")
    dpop_key = ec.generate_private_key(ec.SECP256R1())
    form = assertion_form(bearer_assertion(key)) if kind == "jwt-bearer" else spiffe_form(spiffe_assertion(ca))
    first = await service.refused(form, no_certificate(dpop=(dpop_proof(dpop_key),)))
    assert first.error == "use_dpop_nonce"
    retry = no_certificate(dpop=(dpop_proof(dpop_key, nonce=first.headers["DPoP-Nonce"]),))
    response = await service.request(form, retry)
    assert response.token_type == "DPoP"
    replayed = await service.refused(
        form, no_certificate(dpop=(dpop_proof(dpop_key, nonce=first.headers["DPoP-Nonce"]),))
    )
    assert replayed.error == "invalid_client", "once the request got past the nonce, the assertion is spent"


async def test_use_dpop_nonce_then_a_new_assertion_with_the_nonce_succeeds(ca: DevCA, key: ClientKey) -> None:
    """The oauth4webapi round trip: the first request is answered ``use_dpop_nonce`` with ``DPoP-Nonce``; the
    retry carries a NEW assertion (oauth4webapi makes one per request) and a proof with the nonce."""
    service = make_service(ca, client_key=key, nonce=True)
    dpop_key = ec.generate_private_key(ec.SECP256R1())
    first = await service.refused(assertion_form(bearer_assertion(key)), no_certificate(dpop=(dpop_proof(dpop_key),)))
    assert first.error == "use_dpop_nonce"
    nonce = first.headers["DPoP-Nonce"]
    retry = no_certificate(dpop=(dpop_proof(dpop_key, nonce=nonce),))
    response = await service.request(assertion_form(bearer_assertion(key)), retry)
    assert response.token_type == "DPoP"


def test_metadata_advertises_methods_algorithms_and_dpop(service: Service) -> None:
    metadata = service.endpoint.metadata()
    assert metadata["token_endpoint_auth_methods_supported"] == ["tls_client_auth", "spiffe_jwt", "private_key_jwt"]
    algorithms = metadata["token_endpoint_auth_signing_alg_values_supported"]
    assert "ES256" in algorithms and "none" not in algorithms
    assert not any(alg.startswith("HS") for alg in algorithms)
    assert metadata["dpop_signing_alg_values_supported"][0] == "ES256"


def test_assertion_types_are_the_rfc_7521_urns(service: Service) -> None:
    assert service.endpoint.auth_methods[1:] == ("spiffe_jwt", "private_key_jwt")
    assert ASSERTION_TYPE_JWT_SPIFFE.endswith(":client-assertion-type:jwt-spiffe")


@pytest.mark.parametrize("kind", ["jwt-bearer", "jwt-spiffe"])
async def test_one_assertion_sent_1000_times_at_once_gets_exactly_one_token(
    ca: DevCA, key: ClientKey, kind: str
) -> None:
    """Issue 11 acceptance, one replica (in-memory replay cache): 1,000 concurrent requests, one success."""
    service = make_service(ca, client_key=key, allow_bearer=True)
    form = assertion_form(bearer_assertion(key)) if kind == "jwt-bearer" else spiffe_form(spiffe_assertion(ca))
    outcomes = await asyncio.gather(*(service.request(form) for _ in range(1000)), return_exceptions=True)
    refused = [outcome for outcome in outcomes if isinstance(outcome, OAuthError)]
    assert len(refused) == 999 and {error.error for error in refused} == {"invalid_client"}
    assert service.endpoint.issuer.issued_count == 1


async def test_the_same_jti_in_the_assertion_and_the_dpop_proof_is_no_replay(service: Service, key: ClientKey) -> None:
    """Each kind of credential is its own replay namespace (broker.oauth.replay.ReplayKind)."""
    proof = dpop_proof(ec.generate_private_key(ec.SECP256R1()), jti="shared")
    await service.request(assertion_form(bearer_assertion(key, jti="shared")), no_certificate(dpop=(proof,)))
