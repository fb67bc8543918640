"""JWS signature verification for the JWT-SVID algorithms (RFC 7515 §5.2 step 8, RFC 7518 §3.3-§3.5).

Only the nine algorithms JWT-SVID §2.1 allows: RS256/384/512 (RSASSA-PKCS1-v1_5), PS256/384/512 (RSASSA-PSS,
MGF1 with the same hash, salt as long as the hash, RFC 7518 §3.5) and ES256/384/512 (ECDSA on P-256/P-384/P-521,
RFC 7518 §3.4). HMAC and EdDSA are not here, so no header can make a public key serve as an HMAC secret.

The key must fit the algorithm: RSA of at least 2048 bits for RS*/PS* (RFC 7518 §3.3, §3.5), the algorithm's
curve for ES*. An ES* signature is ``R || S``, each exactly the curve's coordinate size (a DER signature is
refused); an RSA signature is exactly the modulus length. Verification is done with ``cryptography`` directly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from broker.identity.errors import JwtSvidError

__all__ = [
    "ALLOWED_ALGORITHMS",
    "MIN_RSA_BITS",
    "InvalidSignatureError",
    "KeyAlgorithmMismatchError",
    "UnsupportedAlgorithmError",
    "WeakKeyError",
    "verify_jws_signature",
]

MIN_RSA_BITS = 2048


class UnsupportedAlgorithmError(JwtSvidError):
    """JWT-SVID §2.1: ``alg`` missing or not one of RS/PS/ES 256/384/512."""

    reason = "unsupported_algorithm"


class KeyAlgorithmMismatchError(JwtSvidError):
    """RFC 7518 §3: the key's type or curve does not fit ``alg`` (or the JWK's own ``alg`` differs)."""

    reason = "key_algorithm_mismatch"


class WeakKeyError(JwtSvidError):
    """RFC 7518 §3.3, §3.5: an RSA key shorter than 2048 bits."""

    reason = "weak_key"


class InvalidSignatureError(JwtSvidError):
    """RFC 7515 §5.2: the signature does not verify (or has the wrong length/encoding)."""

    reason = "invalid_signature"


@dataclass(frozen=True, slots=True)
class _Algorithm:
    family: Literal["RS", "PS", "ES"]
    hash: hashes.HashAlgorithm
    curve: type[ec.EllipticCurve] | None = None
    coordinate_size: int = 0


_ALGORITHMS: Mapping[str, _Algorithm] = {
    "RS256": _Algorithm("RS", hashes.SHA256()),
    "RS384": _Algorithm("RS", hashes.SHA384()),
    "RS512": _Algorithm("RS", hashes.SHA512()),
    "PS256": _Algorithm("PS", hashes.SHA256()),
    "PS384": _Algorithm("PS", hashes.SHA384()),
    "PS512": _Algorithm("PS", hashes.SHA512()),
    "ES256": _Algorithm("ES", hashes.SHA256(), ec.SECP256R1, 32),
    "ES384": _Algorithm("ES", hashes.SHA384(), ec.SECP384R1, 48),
    "ES512": _Algorithm("ES", hashes.SHA512(), ec.SECP521R1, 66),
}
ALLOWED_ALGORITHMS = frozenset(_ALGORITHMS)


def shown(value: object) -> str:
    """A header or claim value for an error message: repr, cut short (it is attacker-chosen)."""
    text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."


def _verify_ecdsa(algorithm: _Algorithm, key: PublicKeyTypes, signing_input: bytes, signature: bytes) -> None:
    """RFC 7518 §3.4: P-256/384/521 key; signature is R || S, each exactly the coordinate size."""
    curve = algorithm.curve
    if curve is None or not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, curve):
        raise KeyAlgorithmMismatchError("the key is not an EC key on the curve the algorithm requires")
    size = algorithm.coordinate_size
    if len(signature) != 2 * size:
        raise InvalidSignatureError(f"ECDSA signature is not {2 * size} bytes of R || S")
    r = int.from_bytes(signature[:size], "big")
    s = int.from_bytes(signature[size:], "big")
    try:
        key.verify(utils.encode_dss_signature(r, s), signing_input, ec.ECDSA(algorithm.hash))
    except InvalidSignature:
        raise InvalidSignatureError("token signature does not verify") from None


def _verify_rsa(algorithm: _Algorithm, key: PublicKeyTypes, signing_input: bytes, signature: bytes) -> None:
    """RFC 7518 §3.3 (PKCS#1 v1.5) and §3.5 (PSS, MGF1 with the same hash, salt = hash length)."""
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyAlgorithmMismatchError("the key is not an RSA key")
    if key.key_size < MIN_RSA_BITS:
        raise WeakKeyError(f"RSA key is {key.key_size} bits, fewer than {MIN_RSA_BITS}")
    if len(signature) != (key.key_size + 7) // 8:
        raise InvalidSignatureError("RSA signature length differs from the modulus length")
    pad: padding.AsymmetricPadding
    if algorithm.family == "PS":
        pad = padding.PSS(mgf=padding.MGF1(algorithm.hash), salt_length=algorithm.hash.digest_size)
    else:
        pad = padding.PKCS1v15()
    try:
        key.verify(signature, signing_input, pad, algorithm.hash)
    except InvalidSignature:
        raise InvalidSignatureError("token signature does not verify") from None


def verify_jws_signature(alg: str, public_key: PublicKeyTypes, signing_input: bytes, signature: bytes) -> None:
    """Verify a JWS signature (RFC 7515 §5.2 step 8) for one of the JWT-SVID algorithms; raise on failure."""
    algorithm = _ALGORITHMS.get(alg)
    if algorithm is None:
        raise UnsupportedAlgorithmError(f"algorithm {shown(alg)} is not allowed for a JWT-SVID")
    if algorithm.family == "ES":
        _verify_ecdsa(algorithm, public_key, signing_input, signature)
    else:
        _verify_rsa(algorithm, public_key, signing_input, signature)


class DuplicateMemberError(ValueError):
    """A JSON object has the same member twice."""


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise DuplicateMemberError("duplicate member")
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json_object(raw: bytes) -> dict[str, Any]:
    """RFC 7515 §5.2 steps 2-4 / RFC 7519 §7.2 step 10: UTF-8 JSON object, no duplicate members, no NaN or
    Infinity. Raises ``ValueError`` (``DuplicateMemberError`` for a repeated member) on anything else, including
    nesting too deep for the parser."""
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_members, parse_constant=_no_constant)
    except DuplicateMemberError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError("not UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def finite_number(value: object) -> float:
    """RFC 7519 §2 NumericDate: a finite JSON number (booleans are not numbers); ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("out of range") from None
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number
