"""JWK Thumbprint (RFC 7638): the only one in the broker.

§3.2: the hash input is the JSON object of the key type's *required* members only (EC: ``crv``, ``kty``, ``x``,
``y``; RSA: ``e``, ``kty``, ``n``; OKP, RFC 8037 §2: ``crv``, ``kty``, ``x``), in lexicographic order, without
whitespace; §3.1: SHA-256, base64url without padding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from broker.jose._rfc7515 import b64url_encode
from broker.jose.errors import InvalidJwkError

__all__ = ["thumbprint"]

_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}


def thumbprint(members: Mapping[str, str]) -> str:
    """The RFC 7638 SHA-256 thumbprint of the public JWK ``members`` (other members are ignored)."""
    names = _REQUIRED.get(members.get("kty", ""))
    if names is None:
        raise InvalidJwkError("the JWK's kty has no RFC 7638 thumbprint here")
    required = {name: members[name] for name in names}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return b64url_encode(hashlib.sha256(canonical).digest())
