"""JWS signature verification (RFC 7515 §5.2, RFC 7518 §3.3-§3.5), at both layers.

Each case runs against :func:`broker.jose.jws.verify_signature` (JOSE errors) and against the JWT-SVID layer's
:func:`broker.identity.jwtsvid.verify_jws_signature` (the same checks, mapped to the JWT-SVID error classes).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.jwk import JWKRegistry

from broker.identity import jwtsvid
from broker.identity.errors import JwtSvidError
from broker.jose import errors, jws
from tests.jose_helpers import VECTORS, Keys, sign


@dataclass(frozen=True)
class Layer:
    verify_jws_signature: Callable[[str, Any, bytes, bytes], None]
    InvalidSignatureError: type[Exception]
    KeyAlgorithmMismatchError: type[Exception]
    UnsupportedAlgorithmError: type[Exception]
    WeakKeyError: type[Exception]


JOSE = Layer(
    jws.verify_signature,
    errors.BadSignatureError,
    errors.KeyAlgorithmMismatchError,
    errors.UnsupportedAlgorithmError,
    errors.WeakKeyError,
)
JWT_SVID = Layer(
    jwtsvid.verify_jws_signature,
    jwtsvid.InvalidSignatureError,
    jwtsvid.KeyAlgorithmMismatchError,
    jwtsvid.UnsupportedAlgorithmError,
    jwtsvid.WeakKeyError,
)
ALLOWED_ALGORITHMS = jwtsvid.ALLOWED_ALGORITHMS


@pytest.fixture(params=[JOSE, JWT_SVID], ids=["jose", "jwt-svid"])
def layer(request: pytest.FixtureRequest) -> Layer:
    return request.param  # type: ignore[no-any-return]


RFC7515: dict[str, Any] = json.loads((VECTORS / "rfc7515_vectors.json").read_text("utf-8"))
DATA = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0"


def unb64(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


@pytest.mark.parametrize(("name", "alg"), [pytest.param("rs256", "RS256", id="A.2-RS256"),
                                           pytest.param("es256", "ES256", id="A.3-ES256")])  # fmt: skip
def test_accepts_rfc7515_appendix_a_examples(layer: Layer, name: str, alg: str) -> None:
    vector = RFC7515[name]
    public_key = JWKRegistry.import_key(vector["jwk"]).public_key
    assert not isinstance(public_key, bytes)
    signing_input, _, signature = vector["compact"].rpartition(".")
    layer.verify_jws_signature(alg, public_key, signing_input.encode(), unb64(signature))
    with pytest.raises(layer.InvalidSignatureError):
        layer.verify_jws_signature(alg, public_key, signing_input.encode() + b"x", unb64(signature))


def test_allowed_algorithms_are_exactly_jwt_svid_section_2_1() -> None:
    assert {f"{f}{b}" for f in ("RS", "PS", "ES") for b in ("256", "384", "512")} == ALLOWED_ALGORITHMS
    assert frozenset(jws.ALGORITHMS) == ALLOWED_ALGORITHMS
    assert {"ES256", "ES384", "ES512"} == jws.ES_ALGORITHMS


@pytest.mark.parametrize("alg", sorted(ALLOWED_ALGORITHMS))
def test_verifies_each_algorithm_and_refuses_other_input(layer: Layer, jose_keys: Keys, alg: str) -> None:
    key = jose_keys.private[alg]
    signature = sign(alg, key, DATA)
    layer.verify_jws_signature(alg, key.public_key(), DATA, signature)
    with pytest.raises(layer.InvalidSignatureError):
        layer.verify_jws_signature(alg, key.public_key(), DATA + b".", signature)


@pytest.mark.parametrize("alg", ["none", "HS256", "HS512", "EdDSA", "ES256K", "RSA-OAEP", "es256", ""])
def test_refuses_algorithms_outside_the_list(layer: Layer, jose_keys: Keys, alg: str) -> None:
    with pytest.raises(layer.UnsupportedAlgorithmError):
        layer.verify_jws_signature(alg, jose_keys.private["ES256"].public_key(), DATA, b"\x00" * 64)


@pytest.mark.parametrize(
    ("alg", "key_alg"),
    [
        pytest.param("ES256", "ES384", id="es256-p384"),
        pytest.param("ES384", "ES512", id="es384-p521"),
        pytest.param("ES512", "ES256", id="es512-p256"),
        pytest.param("ES256", "RS256", id="es256-rsa"),
        pytest.param("RS256", "ES256", id="rs256-ec"),
        pytest.param("PS512", "ES512", id="ps512-ec"),
    ],
)
def test_refuses_key_that_does_not_fit_the_algorithm(layer: Layer, jose_keys: Keys, alg: str, key_alg: str) -> None:
    key = jose_keys.private[key_alg]
    with pytest.raises(layer.KeyAlgorithmMismatchError):
        layer.verify_jws_signature(alg, key.public_key(), DATA, sign(key_alg, key, DATA))


def test_refuses_edwards_key_for_ecdsa(layer: Layer) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(layer.KeyAlgorithmMismatchError):
        layer.verify_jws_signature("ES256", key.public_key(), DATA, key.sign(DATA))


def test_refuses_rsa_key_under_2048_bits(layer: Layer) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(layer.WeakKeyError):
        layer.verify_jws_signature("RS256", key.public_key(), DATA, sign("RS256", key, DATA))


def test_refuses_der_encoded_ecdsa_signature(layer: Layer, jose_keys: Keys) -> None:
    key = jose_keys.private["ES256"]
    with pytest.raises(layer.InvalidSignatureError, match="64 bytes"):
        layer.verify_jws_signature("ES256", key.public_key(), DATA, key.sign(DATA, ec.ECDSA(hashes.SHA256())))


@pytest.mark.parametrize(
    ("alg", "change"),
    [
        pytest.param("ES256", lambda s: s[:-1], id="es256-short"),
        pytest.param("ES256", lambda s: s + b"\x00", id="es256-long"),
        pytest.param("ES256", lambda s: b"\x00" * 64, id="es256-zero"),
        pytest.param("ES512", lambda s: s[1:], id="es512-short"),
        pytest.param("RS256", lambda s: b"\x00" + s, id="rsa-leading-zero-byte"),
        pytest.param("PS256", lambda s: s[:-1], id="pss-short"),
        pytest.param("PS256", lambda s: s[:100] + bytes([s[100] ^ 1]) + s[101:], id="pss-bit-flip"),
    ],
)
def test_refuses_malformed_signatures(layer: Layer, jose_keys: Keys, alg: str, change: Any) -> None:
    key = jose_keys.private[alg]
    with pytest.raises(layer.InvalidSignatureError):
        layer.verify_jws_signature(alg, key.public_key(), DATA, change(sign(alg, key, DATA)))


def test_refuses_pkcs1_signature_for_pss_and_back(layer: Layer, jose_keys: Keys) -> None:
    key = jose_keys.private["RS256"]
    with pytest.raises(layer.InvalidSignatureError):
        layer.verify_jws_signature("PS256", key.public_key(), DATA, sign("RS256", key, DATA))
    with pytest.raises(layer.InvalidSignatureError):
        layer.verify_jws_signature("RS256", key.public_key(), DATA, sign("PS256", key, DATA))


def test_errors_are_jwt_svid_errors_with_distinct_reasons() -> None:
    svid = JWT_SVID
    classes = [
        svid.UnsupportedAlgorithmError,
        svid.KeyAlgorithmMismatchError,
        svid.WeakKeyError,
        svid.InvalidSignatureError,
    ]
    assert all(issubclass(cls, JwtSvidError) for cls in classes)
    assert len({cls.reason for cls in classes if issubclass(cls, JwtSvidError)}) == len(classes)


def test_jose_errors_are_jose_errors_with_distinct_codes() -> None:
    core = JOSE
    classes = [
        core.UnsupportedAlgorithmError,
        core.KeyAlgorithmMismatchError,
        core.WeakKeyError,
        core.InvalidSignatureError,
    ]
    assert all(issubclass(cls, errors.JoseError) for cls in classes)
    assert len({cls.error for cls in classes if issubclass(cls, errors.JoseError)}) == len(classes)
