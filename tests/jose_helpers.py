"""Building JWS tokens for the JWT-SVID tests, with a signer independent of the code under test (RFC 7518 §3)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from broker.identity.bundle import JwtAuthority, JwtBundle
from broker.identity.spiffeid import TrustDomain

TD = TrustDomain("example.org")
OTHER_TD = TrustDomain("other.test")
SUB = "spiffe://example.org/ns/shop/sa/web"
AUD = "spiffe://example.org/broker"
NOW = 1_700_000_000.0
VECTORS = Path(__file__).resolve().parent / "fixtures" / "identity"
HASHES = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
CURVE_BYTES = {"256": 32, "384": 48, "512": 66}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(alg: str, key: Any, data: bytes) -> bytes:
    """An independent JWS signer (RFC 7518 §3) for test tokens."""
    family, bits = alg[:2], alg[2:]
    digest = HASHES.get(bits, hashes.SHA256())
    if family == "ES":
        r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
        return r.to_bytes(CURVE_BYTES[bits], "big") + s.to_bytes(CURVE_BYTES[bits], "big")
    if family == "RS":
        return bytes(key.sign(data, padding.PKCS1v15(), digest))
    if family == "PS":
        return bytes(key.sign(data, padding.PSS(padding.MGF1(digest), digest.digest_size), digest))
    if family == "HS":
        mac = hmac.HMAC(key, digest)
        mac.update(data)
        return mac.finalize()
    if alg == "EdDSA":
        return bytes(key.sign(data))
    raise AssertionError(alg)


DROP = object()  # as a claim or header value: leave the member out


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": SUB, "aud": [AUD], "exp": NOW + 300, "iat": NOW - 5}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


def encode(header: dict[str, Any], body: dict[str, Any] | str, key: Any, alg: str | None = None) -> str:
    payload = body if isinstance(body, str) else json.dumps(body)
    signing_input = b64(json.dumps(header).encode()) + "." + b64(payload.encode())
    return signing_input + "." + b64(sign(alg or header["alg"], key, signing_input.encode()))


@dataclass
class Keys:
    """Signing keys by algorithm family, and the bundles holding their public halves (kid = alg name)."""

    private: dict[str, Any] = field(default_factory=dict)

    def bundles(self, **extra: JwtAuthority) -> dict[TrustDomain, JwtBundle]:
        authorities = {alg: JwtAuthority(alg, key.public_key(), "jwt-svid") for alg, key in self.private.items()}
        authorities.update(extra)
        return {TD: JwtBundle(TD, authorities)}

    def token(self, alg: str = "ES256", *, header: dict[str, Any] | None = None, **claim_overrides: Any) -> str:
        head = {"alg": alg, "kid": alg, "typ": "JWT"} if header is None else header
        return encode(head, claims(**claim_overrides), self.private[alg], alg)


def make_keys() -> Keys:
    """One RSA-2048 key (for RS* and PS*) and one EC key per curve (ES256/384/512)."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    result = Keys()
    for bits in ("256", "384", "512"):
        result.private["RS" + bits] = rsa_key
        result.private["PS" + bits] = rsa_key
    result.private["ES256"] = ec.generate_private_key(ec.SECP256R1())
    result.private["ES384"] = ec.generate_private_key(ec.SECP384R1())
    result.private["ES512"] = ec.generate_private_key(ec.SECP521R1())
    return result


def hdr(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"alg": "ES256", "kid": "ES256", "typ": "JWT"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not DROP}
