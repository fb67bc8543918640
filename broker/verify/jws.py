"""Compact JWS (RFC 7515 §7.1) parsing and ECDSA verification with ``cryptography`` directly.

The hot path of every protected request: one regex over the token, two base64url decodes + ``json.loads``,
and one ECDSA verify. RFC 7518 §3.4: an ES* signature is the fixed-width big-endian ``r || s``, which
``cryptography`` wants as a DER ``Ecdsa-Sig-Value``; :func:`verify_es` converts it. Keys are imported once by
the JWKS provider, never per token. Nothing here ever puts the token into an error message.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from broker.identity.errors import IdentityError
from broker.identity.jws import InvalidSignatureError, strict_json_object, verify_jws_signature

__all__ = ["ES_ALGORITHMS", "CompactJws", "JwsError", "b64url_decode", "parse_compact", "verify_es"]

# Three base64url segments (RFC 7515 §2: no padding); fullmatch, so no trailing newline slips through.
_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
MAX_TOKEN_LENGTH = 16 * 1024


# The ES algorithms an access token may use (RFC 7518 §3.4); the signature check itself is shared with the
# JWT-SVID validator (broker.identity.jws), which checks curve, R || S width and signature.
ES_ALGORITHMS: frozenset[str] = frozenset({"ES256", "ES384", "ES512"})


class JwsError(ValueError):
    """The token is not a well-formed compact JWS, or its signature does not verify."""


@dataclass(frozen=True, slots=True)
class CompactJws:
    """A parsed (not yet verified) compact JWS whose payload is a JSON object."""

    header: dict[str, Any]
    payload: dict[str, Any] = field(repr=False)
    signing_input: bytes = field(repr=False)
    signature: bytes = field(repr=False)


def b64url_decode(segment: str) -> bytes:
    """Decode unpadded base64url (RFC 7515 §2); the caller has already checked the alphabet."""
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise JwsError("bad base64url") from None


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """UTF-8 JSON object, no duplicate members, no NaN/Infinity, bounded nesting (RFC 7515 §5.2)."""
    try:
        return strict_json_object(data)
    except ValueError:
        raise JwsError(f"{what} is not a JSON object in UTF-8 without duplicate members") from None


def parse_compact(token: str) -> CompactJws:
    """Split and decode a compact JWS; the header and payload must be JSON objects."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise JwsError("token too long")
    match = _COMPACT.fullmatch(token)
    if match is None:
        raise JwsError("not a compact JWS")
    header_b64, payload_b64, signature_b64 = match.groups()
    header = _json_object(b64url_decode(header_b64), "header")
    payload = _json_object(b64url_decode(payload_b64), "payload")
    signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
    return CompactJws(header, payload, signing_input, b64url_decode(signature_b64))


def verify_es(jws: CompactJws, alg: str, key: ec.EllipticCurvePublicKey) -> None:
    """Verify an ES256/384/512 signature (RFC 7518 §3.4); the key's curve must be the algorithm's."""
    if alg not in ES_ALGORITHMS:
        raise JwsError("algorithm does not match the key")
    try:
        verify_jws_signature(alg, key, jws.signing_input, jws.signature)
    except IdentityError as exc:
        raise JwsError(
            "bad signature" if isinstance(exc, InvalidSignatureError) else "algorithm does not match the key"
        ) from None
