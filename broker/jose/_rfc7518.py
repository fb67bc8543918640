"""JWS algorithms (RFC 7518 §3): the table, raw ``R || S`` <-> DER, and signature verification.

Only RS256/384/512 (RSASSA-PKCS1-v1_5, §3.3), PS256/384/512 (RSASSA-PSS, MGF1 with the same hash, salt as long
as the hash, §3.5) and ES256/384/512 (ECDSA on P-256/P-384/P-521, §3.4). HMAC and EdDSA are not here, so no
header can make a public key serve as an HMAC secret.

The key must fit the algorithm: RSA of at least 2048 bits for RS*/PS* (§3.3, §3.5), the algorithm's curve for
ES*. An ES* signature is ``R || S``, each exactly the curve's coordinate size (a DER signature is refused); an
RSA signature is exactly the modulus length. Verification is done with ``cryptography`` directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from broker.jose.errors import BadSignatureError, KeyAlgorithmMismatchError, UnsupportedAlgorithmError, WeakKeyError

__all__ = [
    "ALGORITHMS",
    "ES_ALGORITHMS",
    "MIN_RSA_BITS",
    "Algorithm",
    "der_to_raw",
    "raw_to_der",
    "verify_signature",
]

MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class Algorithm:
    """One row of the table: family, hash, and for ES* the curve and its coordinate size in bytes."""

    family: Literal["RS", "PS", "ES"]
    hash: hashes.HashAlgorithm
    curve: type[ec.EllipticCurve] | None = None
    coordinate_size: int = 0


ALGORITHMS: Mapping[str, Algorithm] = {
    "RS256": Algorithm("RS", hashes.SHA256()),
    "RS384": Algorithm("RS", hashes.SHA384()),
    "RS512": Algorithm("RS", hashes.SHA512()),
    "PS256": Algorithm("PS", hashes.SHA256()),
    "PS384": Algorithm("PS", hashes.SHA384()),
    "PS512": Algorithm("PS", hashes.SHA512()),
    "ES256": Algorithm("ES", hashes.SHA256(), ec.SECP256R1, 32),
    "ES384": Algorithm("ES", hashes.SHA384(), ec.SECP384R1, 48),
    "ES512": Algorithm("ES", hashes.SHA512(), ec.SECP521R1, 66),
}
ES_ALGORITHMS: frozenset[str] = frozenset(name for name, row in ALGORITHMS.items() if row.family == "ES")


def raw_to_der(signature: bytes, size: int) -> bytes:
    """§3.4: ``R || S`` (each ``size`` bytes, big-endian) as the DER ``Ecdsa-Sig-Value`` cryptography wants."""
    return utils.encode_dss_signature(int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big"))


def der_to_raw(signature: bytes, size: int) -> bytes:
    """§3.4: a DER ``Ecdsa-Sig-Value`` as ``R || S``, each ``size`` bytes big-endian."""
    r, s = utils.decode_dss_signature(signature)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _verify_ecdsa(algorithm: Algorithm, key: PublicKeyTypes, signing_input: bytes, signature: bytes) -> None:
    """§3.4: P-256/384/521 key; signature is R || S, each exactly the coordinate size."""
    curve = algorithm.curve
    if curve is None or not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, curve):
        raise KeyAlgorithmMismatchError("the key is not an EC key on the curve the algorithm requires")
    size = algorithm.coordinate_size
    if len(signature) != 2 * size:
        raise BadSignatureError(f"ECDSA signature is not {2 * size} bytes of R || S")
    try:
        der = utils.encode_dss_signature(
            int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
        )
        key.verify(der, signing_input, ec.ECDSA(algorithm.hash))
    except InvalidSignature:
        raise BadSignatureError("token signature does not verify") from None


def _verify_rsa(algorithm: Algorithm, key: PublicKeyTypes, signing_input: bytes, signature: bytes) -> None:
    """§3.3 (PKCS#1 v1.5) and §3.5 (PSS, MGF1 with the same hash, salt = hash length)."""
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyAlgorithmMismatchError("the key is not an RSA key")
    if key.key_size < MIN_RSA_BITS:
        raise WeakKeyError(f"RSA key is {key.key_size} bits, fewer than {MIN_RSA_BITS}")
    if len(signature) != (key.key_size + 7) // 8:
        raise BadSignatureError("RSA signature length differs from the modulus length")
    pad: padding.AsymmetricPadding
    if algorithm.family == "PS":
        pad = padding.PSS(mgf=padding.MGF1(algorithm.hash), salt_length=algorithm.hash.digest_size)
    else:
        pad = padding.PKCS1v15()
    try:
        key.verify(signature, signing_input, pad, algorithm.hash)
    except InvalidSignature:
        raise BadSignatureError("token signature does not verify") from None


def verify_signature(alg: str, public_key: PublicKeyTypes, signing_input: bytes, signature: bytes) -> None:
    """RFC 7515 §5.2 step 8 for one algorithm of the table; raise a :class:`~broker.jose.errors.JoseError`."""
    algorithm = ALGORITHMS.get(alg)
    if algorithm is None:
        raise UnsupportedAlgorithmError("the algorithm is not supported")
    if algorithm.family == "ES":
        _verify_ecdsa(algorithm, public_key, signing_input, signature)
    else:
        _verify_rsa(algorithm, public_key, signing_input, signature)
