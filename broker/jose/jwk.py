"""JWK and JWK Set (RFC 7517) <-> ``cryptography`` keys: the one JWKS reader.

* :func:`jwks_keys`: the ``keys`` array of a JWK Set (RFC 7517 §5); each caller decides what an unusable
  entry means (the verifier skips it, a SPIFFE bundle refuses it).
* :func:`public_key` imports the public members of an EC, RSA or OKP JWK (RFC 7518 §6.2.1, §6.3.1, RFC 8037
  §2); :func:`ec_public_key` the EC ones only (P-256/384/521) and refuses a point not on the curve.
* :func:`ec_public_jwk` writes an EC public key's members (RFC 7518 §6.2.1), e.g. for a ``kid`` thumbprint;
  :func:`public_jwk` an EC or RSA public key's (§6.2.1, §6.3.1), e.g. the ``jwk`` header of a DPoP proof.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from joserfc.jwk import JWKRegistry

from broker.jose._rfc7515 import b64url_decode, b64url_encode
from broker.jose._rfc7638 import thumbprint
from broker.jose.errors import Base64urlError, InvalidJwkError, SymmetricKeyError

__all__ = [
    "PUBLIC_KEY_MEMBERS",
    "ImportedKey",
    "PublicKeyCache",
    "ec_public_jwk",
    "ec_public_key",
    "jwks_keys",
    "public_jwk",
    "public_key",
]

# RFC 7518 §6.2.1 (EC), §6.3.1 (RSA), RFC 8037 §2 (OKP): the members that make up a public key.
PUBLIC_KEY_MEMBERS = frozenset({"kty", "crv", "x", "y", "n", "e"})
_CURVES: dict[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
_CURVE_NAMES = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}


def jwks_keys(document: object) -> list[Any] | None:
    """The ``keys`` array of a JWK Set (RFC 7517 §5), or None if ``document`` is not a JSON object with one."""
    keys = document.get("keys") if isinstance(document, dict) else None
    return keys if isinstance(keys, list) else None


def ec_public_key(jwk: Mapping[str, object]) -> ec.EllipticCurvePublicKey:
    """The EC public key of ``jwk`` (``crv``, ``x``, ``y``); :class:`InvalidJwkError` if it is not one."""
    curve = _CURVES.get(str(jwk.get("crv")))
    x, y = jwk.get("x"), jwk.get("y")
    if curve is None or not isinstance(x, str) or not isinstance(y, str):
        raise InvalidJwkError("not an EC public key on P-256, P-384 or P-521")
    try:
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(b64url_decode(x, canonical=False), "big"),
            int.from_bytes(b64url_decode(y, canonical=False), "big"),
            curve,
        )
        return numbers.public_key()  # raises ValueError for a point not on the curve
    except (Base64urlError, ValueError):
        raise InvalidJwkError("the EC point is not on the curve") from None


def public_key(jwk: Mapping[str, Any]) -> PublicKeyTypes:
    """The asymmetric public key of ``jwk`` (only its public key members are read); :class:`InvalidJwkError`."""
    # Only the public key members go to joserfc: it refuses ``use`` values other than ``sig``/``enc`` (RFC 7517
    # §4.2), and SPIFFE bundles carry ``use: jwt-svid`` (Trust Domain and Bundle §4.2.2).
    material = {k: v for k, v in jwk.items() if k in PUBLIC_KEY_MEMBERS}
    try:
        key = JWKRegistry.import_key(material).public_key
    except Exception:  # joserfc raises several types for malformed keys
        raise InvalidJwkError("unreadable key") from None
    if isinstance(key, bytes):
        raise SymmetricKeyError("symmetric key")
    return key


def ec_public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """RFC 7518 §6.2.1: ``kty``, ``crv``, ``x``, ``y`` of a P-256/384/521 public key (fixed-width coordinates)."""
    crv, size = _CURVE_NAMES[key.curve.name]
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": crv,
        "x": b64url_encode(numbers.x.to_bytes(size, "big")),
        "y": b64url_encode(numbers.y.to_bytes(size, "big")),
    }


def public_jwk(key: PublicKeyTypes) -> dict[str, str]:
    """The public key members of an EC (RFC 7518 §6.2.1) or RSA (§6.3.1: ``n``, ``e`` without leading zeros)
    public key; ``ValueError`` for any other key type."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ec_public_jwk(key)
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"kty": "RSA", "n": _uint(numbers.n), "e": _uint(numbers.e)}
    raise ValueError("only EC and RSA public keys have a JWK here")


def _uint(value: int) -> str:
    """RFC 7518 §2 Base64urlUInt: the minimal big-endian octets (at least one), base64url."""
    return b64url_encode(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


class ImportedKey(NamedTuple):
    """A JWK's public key, its canonical members (RFC 7518 §6.2.1, §6.3.1) and their RFC 7638 thumbprint."""

    key: PublicKeyTypes
    members: dict[str, str]
    jkt: str


class PublicKeyCache:
    """Imported public keys by their exact JWK members (LRU, bounded). One client signs every assertion or proof
    with the same key, and importing it (point or modulus checks) plus its thumbprint costs about as much as the
    signature check. Only a successful import is kept, and the same members always give the same key, so the
    cache changes no answer. A JWK with a non-string member is imported each time (never cached). Errors are
    :func:`public_key`'s (:class:`~broker.jose.errors.InvalidJwkError`)."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._keys: OrderedDict[tuple[tuple[str, str], ...], ImportedKey] = OrderedDict()

    def get(self, jwk: Mapping[str, Any]) -> ImportedKey:
        if not all(isinstance(value, str) for value in jwk.values()):
            return _imported(jwk)
        name = tuple(sorted(jwk.items()))
        found = self._keys.get(name)
        if found is not None:
            self._keys.move_to_end(name)
            return found
        found = self._keys[name] = _imported(jwk)
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return found


def _imported(jwk: Mapping[str, Any]) -> ImportedKey:
    key = ec_public_key(jwk) if jwk.get("kty") == "EC" else public_key(jwk)
    try:
        members = public_jwk(key)
    except ValueError:
        raise InvalidJwkError("the JWK's key type has no public members here") from None
    return ImportedKey(key, members, thumbprint(members))
