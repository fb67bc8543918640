"""Tests for broker.tokens.client_auth.jwt_bearer: RFC 7523 §2.2 ``private_key_jwt`` for registered clients.

Every refusal goes through the token endpoint as the HTTP handler calls it, and checks the RFC 7521 §4.2.1 error
(``invalid_client``) and that no token was issued.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from broker.devtools.devca import DevCA
from broker.oauth.binding import Jkt
from broker.oauth.replay import ReplayKind, replay_key
from broker.tokens.drift import DriftSource
from tests.jose_helpers import b64
from tests.unit.tokens.client_auth.assertion_helpers import (
    CLIENT_ID,
    DROP,
    LEEWAY,
    LEGACY,
    NOW,
    TOKEN_URL,
    ClientKey,
    Service,
    assertion_form,
    bearer_assertion,
    bearer_claims,
    dpop_proof,
    make_service,
    no_certificate,
    registered,
)
from tests.unit.tokens.endpoint_helpers import API, ISSUER


@pytest.fixture
def key() -> ClientKey:
    return ClientKey()


@pytest.fixture
def service(ca: DevCA, key: ClientKey) -> Service:
    return make_service(ca, client_key=key, allow_bearer=True)


def unsigned(key: ClientKey) -> str:
    head = b64(b'{"alg":"none","typ":"JWT"}')
    return f"{head}.{b64(json.dumps(bearer_claims()).encode())}."


P384 = ec.generate_private_key(ec.SECP384R1())

VIOLATIONS: list[tuple[str, Callable[[ClientKey], str], str]] = [
    ("iss-differs-from-sub", lambda k: bearer_assertion(k, iss="someone-else"), "'iss' and 'sub'"),
    ("iss-missing", lambda k: bearer_assertion(k, iss=DROP), "needs 'iss' and 'sub'"),
    ("sub-not-string", lambda k: bearer_assertion(k, sub=7), "needs 'iss' and 'sub'"),
    ("unknown-client", lambda k: bearer_assertion(k, iss="nobody", sub="nobody"), "unknown or disabled"),
    ("aud-missing", lambda k: bearer_assertion(k, aud=DROP), "no 'aud'"),
    ("aud-token-endpoint-url", lambda k: bearer_assertion(k, aud=TOKEN_URL), "sole value"),
    ("aud-extra-value", lambda k: bearer_assertion(k, aud=[ISSUER, API]), "sole value"),
    ("exp-missing", lambda k: bearer_assertion(k, exp=DROP), "no 'exp'"),
    ("expired", lambda k: bearer_assertion(k, iat=NOW - 60, exp=NOW - LEEWAY), "expired"),
    ("lifetime-exp-minus-iat", lambda k: bearer_assertion(k, iat=NOW, exp=NOW + 61), "lifetime"),
    (
        "lifetime-exp-minus-now",
        lambda k: bearer_assertion(k, iat=DROP, exp=NOW + 60 + LEEWAY + 1),
        "lifetime",
    ),
    ("nbf-in-future", lambda k: bearer_assertion(k, nbf=NOW + LEEWAY + 1), "not yet valid"),
    (
        "iat-in-future",
        lambda k: bearer_assertion(k, iat=NOW + LEEWAY + 1, exp=NOW + LEEWAY + 20),
        "issued in the future",
    ),
    ("jti-missing", lambda k: bearer_assertion(k, jti=DROP), "no 'jti'"),
    ("jti-empty", lambda k: bearer_assertion(k, jti=""), "'jti' must be a string"),
    ("alg-none", unsigned, "not a compact JWS"),
    (
        "alg-hs256-with-public-key",
        lambda k: bearer_assertion(k, header={"alg": "HS256"}, signing_key=str(k.jwk()).encode()),
        "not one this client registered",
    ),
    (
        "alg-not-registered",
        lambda k: bearer_assertion(k, header={"alg": "ES384"}, signing_key=P384),
        "not one this client registered",
    ),
    ("header-jwk", lambda k: bearer_assertion(k, header={"jwk": k.jwk()}), "may hold only"),
    ("header-jku", lambda k: bearer_assertion(k, header={"jku": "https://evil.example/jwks"}), "may hold only"),
    ("header-x5u", lambda k: bearer_assertion(k, header={"x5u": "https://evil.example/c.pem"}), "may hold only"),
    ("header-x5c", lambda k: bearer_assertion(k, header={"x5c": ["MIIB"]}), "may hold only"),
    ("header-crit", lambda k: bearer_assertion(k, header={"crit": ["exp"]}), "may hold only"),
    ("typ-dpop", lambda k: bearer_assertion(k, header={"typ": "dpop+jwt"}), "'typ' must be"),
    ("typ-access-token", lambda k: bearer_assertion(k, header={"typ": "at+jwt"}), "'typ' must be"),
    ("kid-unknown", lambda k: bearer_assertion(k, header={"kid": "k2"}), "names none of the client's keys"),
    ("kid-not-string", lambda k: bearer_assertion(k, header={"kid": 1}), "'kid' must be a string"),
    (
        "wrong-key",
        lambda k: bearer_assertion(k, signing_key=ec.generate_private_key(ec.SECP256R1())),
        "signature does not verify",
    ),
    ("bad-signature", lambda k: bearer_assertion(k)[:-4] + "AAAA", "signature does not verify"),
    ("not-a-jws", lambda k: "not.a.jws", "not a compact JWS"),
    ("jwe-shaped", lambda k: "a.b.c.d.e", "not a compact JWS"),
]


@pytest.mark.parametrize(("make", "message"), [v[1:] for v in VIOLATIONS], ids=[v[0] for v in VIOLATIONS])
async def test_rule_violation_is_invalid_client_and_issues_no_token(
    service: Service, key: ClientKey, make: Callable[[ClientKey], str], message: str
) -> None:
    error = await service.refused(assertion_form(make(key)))
    assert error.error == "invalid_client"
    assert message in error.description
    assert service.drift.report(CLIENT_ID, DriftSource.ASSERTION) is None


async def test_client_id_other_than_iss_and_sub_is_invalid_client(service: Service, key: ClientKey) -> None:
    error = await service.refused(assertion_form(bearer_assertion(key), client_id="other"))
    assert error.error == "invalid_client"
    assert "client_id does not match" in error.description


async def test_client_id_equal_to_sub_is_accepted(service: Service, key: ClientKey) -> None:
    await service.request(assertion_form(bearer_assertion(key), client_id=CLIENT_ID))


async def test_disabled_client_is_invalid_client(ca: DevCA, key: ClientKey) -> None:
    service = make_service(ca, clients=[registered(key, disabled=True)], allow_bearer=True)
    error = await service.refused(assertion_form(bearer_assertion(key)))
    assert (error.error, error.description) == ("invalid_client", "unknown or disabled client")


async def test_lifetime_cap_is_the_clients_own(ca: DevCA, key: ClientKey) -> None:
    service = make_service(ca, clients=[registered(key, max_assertion_lifetime=10)], allow_bearer=True)
    await service.request(assertion_form(bearer_assertion(key, exp=NOW + 10)))
    error = await service.refused(assertion_form(bearer_assertion(key, exp=NOW + 11)))
    assert error.error == "invalid_client"
    assert "longer than the 10 s allowed" in error.description


async def test_client_registering_es384_may_use_it(ca: DevCA) -> None:
    key = ClientKey(P384)
    client = registered(key, jwks={"keys": [key.jwk()]}, algorithms=("ES384",))
    service = make_service(ca, clients=[client], allow_bearer=True)
    await service.request(assertion_form(bearer_assertion(key, header={"alg": "ES384"})))


async def test_replayed_assertion_is_invalid_client_and_records_drift_once(service: Service, key: ClientKey) -> None:
    assertion = bearer_assertion(key, iat=NOW - 2)
    await service.request(assertion_form(assertion))
    service.clock.now += 1
    error = await service.refused(assertion_form(assertion))
    assert (error.error, error.description) == ("invalid_client", "client assertion was already used ('jti' replayed)")
    report = service.drift.report(CLIENT_ID, DriftSource.ASSERTION)
    assert report is not None and (report.samples, report.median) == (1, 2.0)


async def test_same_jti_is_refused_even_in_a_new_assertion(service: Service, key: ClientKey) -> None:
    await service.request(assertion_form(bearer_assertion(key, jti="once")))
    error = await service.refused(assertion_form(bearer_assertion(key, jti="once", iat=NOW + 1)))
    assert error.error == "invalid_client"


async def test_forged_assertion_cannot_spend_the_clients_jti(service: Service, key: ClientKey) -> None:
    """The signature is verified before the ``jti`` is recorded: an attacker who learned a ``jti`` (or guesses
    the next one) cannot burn it with an assertion signed by another key."""
    forged = bearer_assertion(key, jti="victim", signing_key=ec.generate_private_key(ec.SECP256R1()))
    assert (await service.refused(assertion_form(forged))).error == "invalid_client"
    await service.request(assertion_form(bearer_assertion(key, jti="victim")))


async def test_assertion_refused_on_its_claims_does_not_spend_its_jti(service: Service, key: ClientKey) -> None:
    await service.refused(assertion_form(bearer_assertion(key, jti="j", aud=TOKEN_URL)))
    await service.request(assertion_form(bearer_assertion(key, jti="j")))


async def test_the_jti_is_recorded_under_the_client_id(service: Service, key: ClientKey) -> None:
    assertion_jti = "jti-under-client"
    await service.request(assertion_form(bearer_assertion(key, jti=assertion_jti)))
    entry = replay_key(ReplayKind.CLIENT_ASSERTION, CLIENT_ID, assertion_jti)
    at = datetime.fromtimestamp(NOW + 1, UTC)
    assert not await service.replay.add(entry, now=at, expires_at=datetime.fromtimestamp(NOW + 100, UTC))


@pytest.mark.parametrize(
    "typ",
    [DROP, "JWT", "jwt", "application/jwt", "client-authentication+jwt", "application/client-authentication+jwt"],
    ids=["absent", "JWT", "jwt-lowercase", "application-jwt", "explicit-type", "explicit-media-type"],
)
async def test_accepted_typ_values(service: Service, key: ClientKey, typ: object) -> None:
    """RFC 7523bis §3.2 (``client-authentication+jwt``) and RFC 7519 §5.1 (``JWT``); RFC 7515 §4.1.9: a ``typ``
    without ``/`` means ``application/`` + it, so ``application/jwt`` is ``JWT``."""
    await service.request(assertion_form(bearer_assertion(key, header={"typ": typ})))


@pytest.mark.parametrize(
    "typ", ["application/dpop+jwt", "JOSE", "at+jwt", 1, "text/jwt"], ids=["dpop", "jose", "at", "number", "text"]
)
async def test_refused_typ_values(service: Service, key: ClientKey, typ: object) -> None:
    error = await service.refused(assertion_form(bearer_assertion(key, header={"typ": typ})))
    assert error.error == "invalid_client"


async def test_without_kid_the_only_key_is_used(service: Service, key: ClientKey) -> None:
    await service.request(assertion_form(bearer_assertion(key, header={"kid": DROP})))
    assert service.keys.asked == [None]


async def test_kid_chooses_among_several_keys_and_is_needed_to(ca: DevCA, key: ClientKey) -> None:
    second = ClientKey(kid="k2")
    client = registered(key, jwks={"keys": [key.jwk(), second.jwk()]})
    service = make_service(ca, clients=[client], allow_bearer=True)
    await service.request(assertion_form(bearer_assertion(second)))
    error = await service.refused(assertion_form(bearer_assertion(second, header={"kid": DROP})))
    assert "ambiguous" in error.description


@pytest.mark.parametrize("members", [{"alg": "ES384"}, {"use": "enc"}], ids=["jwk-alg-differs", "jwk-use-enc"])
async def test_key_registered_for_another_alg_or_use_is_refused(
    ca: DevCA, key: ClientKey, members: dict[str, str]
) -> None:
    service = make_service(ca, clients=[registered(key, jwks={"keys": [key.jwk(**members)]})], allow_bearer=True)
    error = await service.refused(assertion_form(bearer_assertion(key)))
    assert (error.error, error.description) == (
        "invalid_client",
        "the client's key is registered for another algorithm or use",
    )


async def test_token_names_the_registered_client_and_binds_to_the_dpop_key(
    service: Service, key: ClientKey, decode: Any
) -> None:
    dpop_key = ec.generate_private_key(ec.SECP256R1())
    context = no_certificate(dpop=(dpop_proof(dpop_key),))
    response = await service.request(assertion_form(bearer_assertion(key)), context)
    _, claims = decode(response.token.token, service.key_store)
    assert claims["sub"] == LEGACY
    assert claims["client_id"] == CLIENT_ID
    assert claims["aud"] == API
    assert claims["iss"] == ISSUER
    assert claims["exp"] == int(NOW) + 300
    assert claims["cnf"] == {"jkt": Jkt.of_public_key(dpop_key.public_key()).value}
    assert response.token_type == "DPoP"
    assert response.to_json()["token_type"] == "DPoP"
    assert service.audit.issued_tokens == [response.token]
