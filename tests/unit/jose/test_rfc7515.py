"""JWS Compact Serialization (RFC 7515 §7.1): the one parser, strict JSON, canonical base64url, ES R || S."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from broker.jose import errors, jws


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def es_token(key: ec.EllipticCurvePrivateKey, alg: str, size: int, header_json: bytes | None = None) -> str:
    signing_input = b64(header_json or json.dumps({"alg": alg}).encode()) + "." + b64(b'{"a":1}')
    der = key.sign(signing_input.encode(), ec.ECDSA(jws.ALGORITHMS[alg].hash))
    return signing_input + "." + b64(jws.der_to_raw(der, size))


def test_es256_signature_verifies_with_the_raw_r_s_encoding() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    compact = jws.parse_compact(es_token(key, "ES256", 32))
    jws.verify(compact, "ES256", key.public_key())
    assert len(compact.signature) == 64
    assert (compact.header, compact.payload) == ({"alg": "ES256"}, {"a": 1})


def test_es384_signature_verifies_and_needs_a_p384_key() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    compact = jws.parse_compact(es_token(key, "ES384", 48))
    jws.verify(compact, "ES384", key.public_key())
    with pytest.raises(errors.KeyAlgorithmMismatchError, match="curve the algorithm requires"):
        jws.verify(compact, "ES256", key.public_key())


def test_der_encoded_signature_is_not_accepted_in_place_of_r_s() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    header_payload = es_token(key, "ES256", 32).rsplit(".", 1)[0]
    der = key.sign(header_payload.encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(errors.BadSignatureError):
        jws.verify(jws.parse_compact(header_payload + "." + b64(der)), "ES256", key.public_key())


def test_raw_and_der_signatures_convert_both_ways() -> None:
    der = ec.generate_private_key(ec.SECP521R1()).sign(b"x", ec.ECDSA(hashes.SHA512()))
    assert jws.raw_to_der(jws.der_to_raw(der, 66), 66) == der


@pytest.mark.parametrize(
    ("token", "error", "message"),
    [
        ("", errors.MalformedJwsError, "empty"),
        ("a." * 9000, errors.TokenTooLongError, "longer than 16384"),
        ('{"payload":"e30"}', errors.MalformedJwsError, "JSON serialization"),
        ("a.b.c.d.e", errors.MalformedJwsError, "JWE"),
        ("a.b", errors.MalformedJwsError, "2 dot-separated parts"),
        ("a..c", errors.MalformedJwsError, "empty part"),
        ("e30.e30.A", errors.Base64urlError, "not valid base64url"),
        ("e30.e31.AA", errors.Base64urlError, "not canonical"),
        (b64(b"[]") + ".e30.AA", errors.JsonObjectError, "header is not a JSON object"),
        ("e30." + b64(b'{"a":1,"a":2}') + ".AA", errors.JsonObjectError, "payload has a duplicate member"),
        ("e30." + b64(b'{"a":NaN}') + ".AA", errors.JsonObjectError, "payload is not UTF-8 JSON"),
        ("e30." + b64(b"[" * 3000 + b"]" * 3000) + ".AA", errors.JsonObjectError, "payload is not UTF-8 JSON"),
        ("e30." + b64(b'{"a":"\xff"}') + ".AA", errors.JsonObjectError, "payload is not UTF-8 JSON"),
        ("e30." + b64(b'{"a":' + b"[" * 40 + b"]" * 40 + b"}") + ".AA", errors.JsonObjectError, "payload is not UTF-8"),
    ],
    ids=["empty", "too-long", "json-serialization", "jwe", "two-parts", "empty-part", "bad-base64url",
         "non-canonical", "header-array", "duplicate", "nan", "too-deep", "not-utf8", "deeper-than-32-in-a-member"],
)  # fmt: skip
def test_parser_refuses_each_malformation(token: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        jws.read_unverified(token)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a":' + b"[" * 31 + b"]" * 31 + b"}",
        b'{"a":"' + b"[{" * 100 + b'"}',
        b'{"a":"\\\\", "b":"\\"' + b"[" * 100 + b'"}',
    ],
    ids=["32-levels", "brackets-inside-a-string", "escaped-backslash"],
)
def test_nesting_bound_counts_only_json_structure(payload: bytes) -> None:
    """The bound is the same on every Python (the json module's own limit differs between 3.11 and 3.13)."""
    assert isinstance(jws.read_unverified("e30." + b64(payload) + ".AA").payload, dict)


def test_non_canonical_base64url_is_read_only_when_asked() -> None:
    token = "e30.e31.AA"  # "e31" decodes like "e30" but is not its canonical spelling
    assert jws.read_unverified(token, canonical=False).payload == {}


def test_signing_input_is_the_first_two_parts_as_sent() -> None:
    parts = jws.split_compact("e30.e30.AA")
    assert parts.signing_input == b"e30.e30" == jws.parse_compact("e30.e30.AA").signing_input
