"""Tests for broker.verify.verifier: every reason a token is refused, and what an accepted token yields."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from broker.errors import InvalidTokenError
from broker.identity.spiffeid import SpiffeId
from broker.verify import AccessTokenVerifier, StaticJwksProvider, VerificationKey, certificate_thumbprint
from tests.unit.verify.verify_helpers import AUDIENCE, ISSUER, NOW, SUBJECT, Signer, b64, b64json, claims_for


async def test_token_bound_to_the_presented_certificate_is_accepted(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes
) -> None:
    verified = await verifier.verify(signer.sign(claims_for(cert_der)), cert_der)
    assert verified.spiffe_id == SpiffeId.parse(SUBJECT)
    assert verified.scopes == frozenset({"orders:read", "orders:write"})
    assert verified.scope == "orders:read orders:write"
    assert verified.audience == (AUDIENCE,)
    assert (verified.client_id, verified.jti, verified.expires_at) == (SUBJECT, "jti-1", NOW + 290)


@pytest.mark.parametrize(
    ("overrides", "header"),
    [
        ({"aud": ["https://other.example", AUDIENCE]}, {}),
        ({"exp": int(NOW) - 29}, {}),
        ({"nbf": int(NOW) + 29}, {}),
        ({"iat": int(NOW) + 29}, {}),
        ({"scope": None}, {}),
        ({}, {"typ": "application/at+jwt"}),
        ({}, {"typ": "AT+JWT"}),
    ],
    ids=[
        "audience-in-list",
        "expired-within-leeway",
        "nbf-within-leeway",
        "iat-within-leeway",
        "no-scope",
        "typ-media-type",
        "typ-case-insensitive",
    ],
)
async def test_edge_cases_that_are_still_valid_are_accepted(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes, overrides: dict[str, Any], header: dict[str, Any]
) -> None:
    await verifier.verify(signer.sign(claims_for(cert_der, **overrides), **header), cert_der)


CLAIM_REJECTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("wrong-issuer", {"iss": "https://evil.example"}, "another issuer"),
    ("issuer-with-trailing-slash", {"iss": ISSUER + "/"}, "another issuer"),
    ("wrong-audience", {"aud": "https://other.example"}, "not meant for this"),
    ("audience-list-without-ours", {"aud": ["https://a.example", "https://b.example"]}, "not meant for this"),
    ("audience-not-string-or-list", {"aud": {"x": AUDIENCE}}, "not meant for this"),
    ("expired", {"exp": int(NOW) - 31}, "expired"),
    ("not-yet-valid", {"nbf": int(NOW) + 31}, "not valid yet"),
    ("issued-in-the-future", {"iat": int(NOW) + 31}, "in the future"),
    ("no-exp", {"exp": None}, "lacks exp"),
    ("no-iat", {"iat": None}, "lacks exp or iat"),
    ("exp-not-a-number", {"exp": str(int(NOW) + 100)}, "not a finite number"),
    ("exp-boolean", {"exp": True}, "not a finite number"),
    ("exp-huge", {"exp": 10**400}, "not a finite number"),
    ("no-jti", {"jti": None}, "lacks client_id or jti"),
    ("no-client-id", {"client_id": None}, "lacks client_id or jti"),
    ("scope-not-string", {"scope": ["a"]}, "scope is not a string"),
    ("no-subject", {"sub": None}, "no subject"),
    ("subject-not-spiffe-id", {"sub": "web-frontend"}, "not a SPIFFE ID"),
    ("no-cnf", {"cnf": None}, "not bound"),
    ("cnf-not-object", {"cnf": "abc"}, "not bound"),
    ("cnf-without-x5t", {"cnf": {"jkt": "abc"}}, "not bound"),
]


@pytest.mark.parametrize(
    ("overrides", "message"), [c[1:] for c in CLAIM_REJECTIONS], ids=[c[0] for c in CLAIM_REJECTIONS]
)
async def test_token_with_bad_claims_is_invalid_token(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidTokenError, match=message):
        await verifier.verify(signer.sign(claims_for(cert_der, **overrides)), cert_der)


HEADER_REJECTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("typ-jwt", {"typ": "JWT"}, "typ must be at\\+jwt"),
    ("typ-missing", {"typ": None}, "typ must be at\\+jwt"),
    ("alg-none", {"alg": "none"}, "algorithm is not allowed"),
    ("alg-es384-not-allowed", {"alg": "ES384"}, "algorithm is not allowed"),
    ("alg-rs256", {"alg": "RS256"}, "algorithm is not allowed"),
    ("kid-missing", {"kid": None}, "no key ID"),
    ("kid-unknown", {"kid": "key-2"}, "unknown key"),
    ("crit-extension", {"crit": ["exp"]}, "critical header"),
]


@pytest.mark.parametrize(
    ("header", "message"), [c[1:] for c in HEADER_REJECTIONS], ids=[c[0] for c in HEADER_REJECTIONS]
)
async def test_token_with_bad_header_is_invalid_token(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes, header: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidTokenError, match=message):
        await verifier.verify(signer.sign(claims_for(cert_der), **header), cert_der)


async def test_hs256_forgery_keyed_with_the_public_key_is_refused(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes
) -> None:
    with pytest.raises(InvalidTokenError, match="algorithm is not allowed"):
        await verifier.verify(signer.sign_hs256_with_public_key(claims_for(cert_der)), cert_der)


def tamper_payload(token: str, cert_der: bytes) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64json(claims_for(cert_der, sub='spiffe://example.org/admin'))}.{signature}"


def truncate_signature(token: str, cert_der: bytes) -> str:
    return token[:-4]


def sign_with_other_key(token: str, cert_der: bytes) -> str:
    return Signer(kid="key-1").sign(claims_for(cert_der))


def sign_with_p384_key(token: str, cert_der: bytes) -> str:
    import cryptography.hazmat.primitives.asymmetric.ec as ec

    return Signer(kid="key-1", curve=ec.SECP384R1()).sign(claims_for(cert_der))


@pytest.mark.parametrize(
    "forge",
    [tamper_payload, truncate_signature, sign_with_other_key, sign_with_p384_key],
    ids=["tampered-payload", "truncated-signature", "other-key-same-kid", "p384-signature"],
)
async def test_bad_signature_is_invalid_token(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes, forge: Callable[[str, bytes], str]
) -> None:
    with pytest.raises(InvalidTokenError, match="signature is invalid"):
        await verifier.verify(forge(signer.sign(claims_for(cert_der)), cert_der), cert_der)


MALFORMED = [
    ("empty", ""),
    ("two-segments", "abc.def"),
    ("trailing-newline", "{token}\n"),
    ("padding", "{token}=="),
    ("header-not-json", b64(b"not json") + ".e30.c2ln"),
    ("payload-array", b64json({"alg": "ES256"}) + "." + b64json([1]) + ".c2ln"),
    ("too-long", "a." + "b" * 20000 + ".c"),
]


@pytest.mark.parametrize("template", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
async def test_malformed_token_is_invalid_token(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes, template: str
) -> None:
    token = template.replace("{token}", signer.sign(claims_for(cert_der)))
    with pytest.raises(InvalidTokenError, match="malformed"):
        await verifier.verify(token, cert_der)


async def test_token_presented_with_another_certificate_is_invalid_token(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes, other_cert_der: bytes
) -> None:
    with pytest.raises(InvalidTokenError, match="different client certificate") as caught:
        await verifier.verify(signer.sign(claims_for(cert_der)), other_cert_der)
    assert caught.value.status == 401
    assert caught.value.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize("presented", [None, b""], ids=["none", "empty"])
async def test_token_presented_without_a_client_certificate_is_invalid_token(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes, presented: bytes | None
) -> None:
    with pytest.raises(InvalidTokenError, match="without a client certificate"):
        await verifier.verify(signer.sign(claims_for(cert_der)), presented)


async def test_key_declaring_another_algorithm_is_not_used(signer: Signer, cert_der: bytes) -> None:
    key = VerificationKey("key-1", signer.key.public_key(), alg="ES384")
    verifier = AccessTokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, jwks=StaticJwksProvider({"key-1": key}), clock=lambda: NOW
    )
    with pytest.raises(InvalidTokenError, match="does not match its key"):
        await verifier.verify(signer.sign(claims_for(cert_der)), cert_der)


async def test_error_descriptions_never_quote_the_token(
    verifier: AccessTokenVerifier, signer: Signer, cert_der: bytes, other_cert_der: bytes
) -> None:
    token = signer.sign(claims_for(cert_der))
    for presented in (token, token + "x", token[:-1]):
        with pytest.raises(InvalidTokenError) as caught:
            await verifier.verify(presented, other_cert_der)
        assert token.split(".")[1][:20] not in caught.value.description
        assert token.split(".")[2][:20] not in caught.value.description


def test_verifier_refuses_an_algorithm_allowlist_outside_ecdsa(signer: Signer) -> None:
    with pytest.raises(ValueError):
        AccessTokenVerifier(issuer=ISSUER, audience=AUDIENCE, jwks=StaticJwksProvider({}), algorithms=["HS256"])
    with pytest.raises(ValueError):
        AccessTokenVerifier(issuer=ISSUER, audience=AUDIENCE, jwks=StaticJwksProvider({}), algorithms=[])


def test_certificate_thumbprint_is_rfc8705_x5t_s256(cert_der: bytes) -> None:
    import base64
    import hashlib

    expected = base64.urlsafe_b64encode(hashlib.sha256(cert_der).digest()).rstrip(b"=").decode()
    assert certificate_thumbprint(cert_der) == expected
    assert "=" not in expected and len(expected) == 43
