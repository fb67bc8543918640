"""The JWK thumbprint (RFC 7638): broker.jose.thumbprint, checked against joserfc's."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.jwk import JWKRegistry

from broker.jose import thumbprint
from broker.jose.errors import InvalidJwkError
from broker.jose.jwk import ec_public_jwk


def test_thumbprint_uses_only_required_members_in_order() -> None:
    # RFC 7638 §3.2: members other than crv, kty, x, y do not change the thumbprint
    members = {"kty": "EC", "crv": "P-256", "x": "AA", "y": "BB"}
    assert thumbprint({**members, "kid": "other", "use": "sig"}) == thumbprint(members)


@pytest.mark.parametrize(
    ("key", "kty"),
    [
        pytest.param(ec.generate_private_key(ec.SECP256R1()).public_key(), "EC", id="ec-p256"),
        pytest.param(ec.generate_private_key(ec.SECP521R1()).public_key(), "EC", id="ec-p521"),
        pytest.param(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(), "RSA", id="rsa"),
        pytest.param(ed25519.Ed25519PrivateKey.generate().public_key(), "OKP", id="okp"),
    ],
)
def test_thumbprint_matches_joserfc_for_each_key_type(key: object, kty: str) -> None:
    jwk = JWKRegistry.import_key(key, kty)  # type: ignore[arg-type]
    members = {k: str(v) for k, v in jwk.as_dict(private=False).items()}
    assert thumbprint(members) == jwk.thumbprint()


def test_ec_public_jwk_thumbprint_matches_joserfc() -> None:
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    # joserfc's annotation omits the key objects import_key accepts.
    assert thumbprint(ec_public_jwk(key)) == JWKRegistry.import_key(key, "EC").thumbprint()  # type: ignore[arg-type]


def test_thumbprint_refuses_a_symmetric_key() -> None:
    with pytest.raises(InvalidJwkError):
        thumbprint({"kty": "oct", "k": "AA"})
