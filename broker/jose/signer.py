"""Signing compact JWS with ES256 (RFC 7515 §7.1, RFC 7518 §3.4): the issuer's hot path, made once per key.

A :class:`CompactSigner` holds one P-256 private key and one protected header. What is the same for every token
signed with them is done when the signer is made: the header's JSON and its base64url segment (RFC 7515 §5.1
steps 1-2), the ``ECDSA(SHA-256)`` parameters, the JSON encoder. Per token there is left: the payload's JSON
(compact separators, ASCII only, member order as given), its base64url segment, one ECDSA signature over
``ASCII(header '.' payload)`` (RFC 7515 §5.1 step 8), and its DER ``Ecdsa-Sig-Value`` turned into the 64-byte
``R || S`` JWS wants (RFC 7518 §3.4). The output is byte for byte what serialising the header and the payload
with ``json.dumps(..., separators=(",", ":"), ensure_ascii=True)`` per token gives.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

__all__ = ["ES256", "CompactSigner", "es256_signature"]

ES256 = "ES256"
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode  # json.dumps makes one per call


def _segment(value: Mapping[str, Any]) -> bytes:
    """RFC 7515 §2 base64url (no padding) of the compact, ASCII JSON of ``value``."""
    return base64.urlsafe_b64encode(_ENCODE(value).encode("ascii")).rstrip(b"=")


class CompactSigner:
    """ES256 compact JWS with one key and one protected header (``alg`` must be ES256: RFC 7515 §4.1.1)."""

    __slots__ = ("_header_dot", "header", "key")

    def __init__(self, key: ec.EllipticCurvePrivateKey, header: Mapping[str, str]) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("ES256 needs a P-256 key (RFC 7518 §3.4)")
        if header.get("alg") != ES256:
            raise ValueError("the protected header must say alg ES256")
        self.key = key
        self.header = dict(header)
        self._header_dot = _segment(self.header) + b"."

    def sign(self, payload: Mapping[str, Any]) -> str:
        """The compact serialization ``header.payload.signature`` of ``payload`` (RFC 7515 §7.1)."""
        signing_input = self._header_dot + _segment(payload)
        signature = base64.urlsafe_b64encode(es256_signature(self.key, signing_input)).rstrip(b"=")
        return (signing_input + b"." + signature).decode("ascii")


def es256_signature(key: ec.EllipticCurvePrivateKey, signing_input: bytes) -> bytes:
    """RFC 7518 §3.4: ECDSA P-256 SHA-256 over ``signing_input``, as ``R || S`` (32 bytes each, big-endian)."""
    r, s = utils.decode_dss_signature(key.sign(signing_input, _ECDSA_SHA256))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")
