"""JWK and JWK Set (RFC 7517) <-> cryptography keys: broker.jose.jwk."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from broker.jose import jwk, jws
from broker.jose.errors import InvalidJwkError, SymmetricKeyError


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()], ids=["p256", "p384", "p521"])
def test_ec_public_jwk_round_trips(curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve).public_key()
    members = jwk.ec_public_jwk(key)
    assert jwk.ec_public_key(members).public_numbers() == key.public_numbers()
    assert jwk.public_key(members).public_numbers() == key.public_numbers()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "members",
    [
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},  # not on the curve
        {"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"},
        {"kty": "EC", "crv": "P-256", "x": 1, "y": "AA"},
        {"kty": "EC", "crv": "P-256", "x": "A", "y": "AA"},  # not base64url
    ],
    ids=["off-curve", "other-curve", "x-not-string", "bad-base64url"],
)
def test_ec_public_key_refuses_what_is_not_one(members: dict[str, Any]) -> None:
    with pytest.raises(InvalidJwkError):
        jwk.ec_public_key(members)


def test_public_key_reads_rsa_and_ignores_other_members() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    numbers = key.public_numbers()
    n = numbers.n.to_bytes(256, "big")
    members = {"kty": "RSA", "n": jws.b64url_encode(n), "e": "AQAB", "use": "jwt-svid", "kid": "k"}
    assert jwk.public_key(members).public_numbers() == numbers  # type: ignore[union-attr]


def test_public_key_refuses_symmetric_and_unreadable_keys() -> None:
    assert issubclass(SymmetricKeyError, InvalidJwkError)
    with pytest.raises(InvalidJwkError):  # ``k`` is not a public key member, so nothing is left to import
        jwk.public_key({"kty": "oct", "k": "AAAA"})
    with pytest.raises(InvalidJwkError):
        jwk.public_key({"kty": "EC", "crv": "P-256"})


@pytest.mark.parametrize(
    ("document", "keys"),
    [({"keys": []}, []), ({"keys": [1]}, [1]), ({"keys": {}}, None), ({}, None), ([], None)],
    ids=["empty", "entries-as-they-are", "keys-not-array", "no-keys", "not-object"],
)
def test_jwks_keys_is_the_keys_array(document: object, keys: list[Any] | None) -> None:
    assert jwk.jwks_keys(document) == keys
