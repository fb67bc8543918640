"""Tests for broker.jose.signer: ES256 compact JWS (RFC 7515 §7.1, RFC 7518 §3.4) with a header made once."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from joserfc import jwt
from joserfc.jwk import ECKey

from broker.jose.jws import parse_compact, verify
from broker.jose.signer import CompactSigner

HEADER = {"alg": "ES256", "kid": "k-1", "typ": "at+jwt"}
CLAIMS: dict[str, Any] = {
    "iss": "https://broker.example:8443",
    "sub": "spiffe://example.org/w",
    "client_id": "spiffe://example.org/w",
    "aud": "https://api.example",
    "iat": 1_700_000_000,
    "exp": 1_700_000_300,
    "jti": "AY1fJ2wAAAB8mVxZr3pQ",
    "cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"},
    "scope": "a b",
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _generic(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """The signing input as the issuer built it before the signer: json.dumps per token."""
    return ".".join(_b64(json.dumps(v, separators=(",", ":"), ensure_ascii=True).encode()) for v in (header, claims))


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(
    "claims",
    [CLAIMS, {**CLAIMS, "sub": 'spiffe://example.org/ü\u2028"q\\'}, {"aud": "x"}],
    ids=["access-token", "non-ascii-and-escapes", "minimal"],
)
def test_signing_input_is_byte_identical_to_json_dumps_per_token(key: ec.EllipticCurvePrivateKey, claims: Any) -> None:
    token = CompactSigner(key, HEADER).sign(claims)
    assert token.rsplit(".", 1)[0] == _generic(HEADER, claims)


def test_token_verifies_with_broker_jose_and_carries_header_and_claims(key: ec.EllipticCurvePrivateKey) -> None:
    jws = parse_compact(CompactSigner(key, HEADER).sign(CLAIMS))
    verify(jws, "ES256", key.public_key())
    assert jws.header == HEADER and jws.payload == CLAIMS and len(jws.signature) == 64


def test_token_verifies_with_joserfc(key: ec.EllipticCurvePrivateKey) -> None:
    token = CompactSigner(key, HEADER).sign(CLAIMS)
    decoded = jwt.decode(token, ECKey.import_key(key.public_key()), algorithms=["ES256"])
    assert decoded.header == HEADER and decoded.claims == CLAIMS


def test_token_verifies_with_cryptography_after_raw_to_der(key: ec.EllipticCurvePrivateKey) -> None:
    token = CompactSigner(key, HEADER).sign(CLAIMS)
    signing_input, _, signature = token.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.public_key().verify(der, signing_input.encode(), ec.ECDSA(hashes.SHA256()))


def test_short_r_or_s_is_left_padded_to_32_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = CompactSigner(key, HEADER)
    small = utils.encode_dss_signature(5, 7)
    monkeypatch.setattr(signer, "key", type("K", (), {"sign": lambda self, data, alg: small})())
    signature = base64.urlsafe_b64decode(signer.sign({}).rsplit(".", 1)[1] + "==")
    assert signature == (5).to_bytes(32, "big") + (7).to_bytes(32, "big")


@pytest.mark.parametrize(
    ("curve", "header"),
    [(ec.SECP384R1(), HEADER), (ec.SECP256R1(), {**HEADER, "alg": "HS256"}), (ec.SECP256R1(), {"kid": "k"})],
    ids=["p384-key", "hmac-alg", "no-alg"],
)
def test_signer_refuses_a_key_or_header_that_is_not_es256(curve: ec.EllipticCurve, header: Any) -> None:
    with pytest.raises(ValueError):
        CompactSigner(ec.generate_private_key(curve), header)
