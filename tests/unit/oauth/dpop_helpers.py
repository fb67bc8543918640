"""Making DPoP proofs for tests with a signer independent of the code under test (so any header can be forged)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from broker.jose.jwk import public_jwk
from tests.jose_helpers import b64, sign

NOW = 1_800_000_000.0
HTU = "https://api.example.org/orders"
TOKEN = "eyJhbGciOiJFUzI1NiJ9.e30.c2ln"  # an opaque access token string for ath
VECTORS = json.loads((Path(__file__).resolve().parents[2] / "fixtures" / "oauth" / "rfc9449.json").read_text())
DROP = object()  # as a header or claim value: leave the member out


def forge(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    *,
    signing_key: Any = None,
    alg: str = "ES256",
    header: dict[str, Any] | None = None,
    sign_alg: str | None = None,
    **claims: Any,
) -> str:
    """A proof whose header and claims default to a valid one and can be overridden (``DROP`` removes); signed
    with ``signing_key`` (any key, an HMAC secret included) when given, else with ``key``."""
    head: dict[str, Any] = {"typ": "dpop+jwt", "alg": alg, "jwk": public_jwk(key.public_key())}
    head.update(header or {})
    body: dict[str, Any] = {"jti": "proof-1", "htm": "GET", "htu": HTU, "iat": int(NOW)}
    body.update(claims)
    head = {k: v for k, v in head.items() if v is not DROP}
    body = {k: v for k, v in body.items() if v is not DROP}
    signing_input = b64(json.dumps(head).encode()) + "." + b64(json.dumps(body).encode())
    signer = key if signing_key is None else signing_key
    return signing_input + "." + b64(sign(sign_alg or alg, signer, signing_input.encode()))
