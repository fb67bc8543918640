"""Helpers for verifier tests: ES256 signing by hand (so malformed tokens can be made), certificates, claims."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "https://broker.example.org"
AUDIENCE = "https://api.example.org"
SUBJECT = "spiffe://example.org/ns/shop/sa/web"
NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def thumbprint(der: bytes) -> str:
    return b64(hashlib.sha256(der).digest())


@dataclass
class Signer:
    """An EC key with a kid; signs compact JWS with any header (including wrong ones, for tests)."""

    kid: str = "key-1"
    curve: ec.EllipticCurve = field(default_factory=ec.SECP256R1)
    key: ec.EllipticCurvePrivateKey = field(init=False)

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(self.curve)

    def jwk(self, **extra: str) -> dict[str, str]:
        numbers = self.key.public_key().public_numbers()
        size = (self.curve.key_size + 7) // 8
        crv = {256: "P-256", 384: "P-384", 521: "P-521"}[self.curve.key_size]
        return {
            "kty": "EC",
            "crv": crv,
            "x": b64(numbers.x.to_bytes(size, "big")),
            "y": b64(numbers.y.to_bytes(size, "big")),
            "kid": self.kid,
            "use": "sig",
            **extra,
        }

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        full_header = {"alg": "ES256", "typ": "at+jwt", "kid": self.kid, **header}
        full_header = {k: v for k, v in full_header.items() if v is not None}
        signing_input = f"{b64json(full_header)}.{b64json(claims)}".encode()
        hash_alg = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[self.curve.key_size]
        r, s = decode_dss_signature(self.key.sign(signing_input, ec.ECDSA(hash_alg)))
        size = (self.curve.key_size + 7) // 8
        return f"{signing_input.decode()}.{b64(r.to_bytes(size, 'big') + s.to_bytes(size, 'big'))}"

    def sign_hs256_with_public_key(self, claims: dict[str, Any]) -> str:
        """The classic algorithm-confusion forgery: HMAC keyed with the public key's bytes."""
        secret = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        signing_input = f"{b64json({'alg': 'HS256', 'typ': 'at+jwt', 'kid': self.kid})}.{b64json(claims)}".encode()
        return f"{signing_input.decode()}.{b64(hmac.new(secret, signing_input, hashlib.sha256).digest())}"


def claims_for(cert_der: bytes, **overrides: Any) -> dict[str, Any]:
    """Claims as the broker issues them (RFC 9068 + RFC 8705 cnf); ``None`` removes a claim."""
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": SUBJECT,
        "client_id": SUBJECT,
        "aud": AUDIENCE,
        "iat": int(NOW) - 10,
        "exp": int(NOW) + 290,
        "jti": "jti-1",
        "scope": "orders:read orders:write",
        "cnf": {"x5t#S256": thumbprint(cert_der)},
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}
