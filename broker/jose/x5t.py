"""The ``x5t#S256`` certificate thumbprint: RFC 7515 §4.1.8, the one RFC 8705 §3.1 puts in ``cnf``.

Base64url (no padding, RFC 7515 §2) of SHA-256 over the certificate's DER encoding.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker.jose._rfc7515 import b64url_encode

__all__ = ["certificate_thumbprint", "x5t_s256"]


def certificate_thumbprint(certificate_der: bytes) -> str:
    """RFC 8705 §3.1 ``x5t#S256``: base64url (no padding) of SHA-256 over the certificate's DER encoding."""
    return b64url_encode(hashlib.sha256(certificate_der).digest())


def x5t_s256(certificate: x509.Certificate) -> str:
    """RFC 8705 §3.1 ``x5t#S256`` of a parsed certificate."""
    return certificate_thumbprint(certificate.public_bytes(serialization.Encoding.DER))
