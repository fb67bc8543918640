"""A fresh ES256 ``private_key_jwt`` client assertion per request (RFC 7523 §3), for the load generator.

Independent of the broker's own JOSE code: ``cryptography`` signs, the JSON is built here.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = ["AssertionSigner"]

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_FIELDS = b"&client_assertion_type=" + JWT_BEARER.replace(":", "%3A").encode() + b"&client_assertion="
ASSERTION_LIFETIME = 30
ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@dataclass(frozen=True)
class AssertionSigner:
    """Signs one fresh ES256 ``private_key_jwt`` assertion per call (RFC 7523 §3), independent of the broker's code."""

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    kid: str
    client_id: str
    audience: str

    @classmethod
    def from_pem(cls, pem: bytes, *, kid: str, client_id: str, audience: str) -> AssertionSigner:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("--assertion-key must be a P-256 private key (ES256)")
        return cls(key, kid, client_id, audience)

    def form_suffix(self) -> bytes:
        """``&client_assertion_type=...&client_assertion=<a fresh JWT>`` (base64url and dots need no escaping)."""
        header = _b64url(json.dumps({"alg": "ES256", "kid": self.kid, "typ": "JWT"}).encode())
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.audience, "iat": now,
                  "exp": now + ASSERTION_LIFETIME, "jti": secrets.token_urlsafe(16)}  # fmt: skip
        signing_input = header + b"." + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        r, s = decode_dss_signature(self.key.sign(signing_input, ECDSA_SHA256))
        signature = _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        return ASSERTION_FIELDS + signing_input + b"." + signature
