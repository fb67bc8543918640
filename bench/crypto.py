"""Single-core crypto references and the verifier benchmark (each run in its own, CPU-pinned process).

``python -m bench.crypto sign-verify --seconds S``: the bare cost of one token exchange's cryptography, a loop of
one ES256 verify (the JWT-SVID) plus one ES256 sign (the access token) with ``cryptography`` on pre-encoded
inputs of realistic size; prints verify+sign pairs per second.

``python -m bench.crypto verifier --seconds S --rounds R``: ``AccessTokenVerifier.verify`` on a valid,
certificate-bound token with its JWKS preloaded (``StaticJwksProvider``), next to a raw ``cryptography`` ES256
verify of the same token's signature over the same signing input (DER signature prepared once). Rounds
alternate raw, verifier, raw, ...; prints the median checks per second of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from broker.devtools.devca import DevCA
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.jose.jws import b64url_decode, parse_compact
from broker.tokens.issuer import AccessTokenIssuer, AuthenticatedClient
from broker.tokens.keys import InMemoryKeyStore, SigningKey, jwks
from broker.verify.jwks import StaticJwksProvider
from broker.verify.verifier import AccessTokenVerifier

__all__ = ["main", "sign_verify_rate", "verifier_rates"]

ISSUER = "https://broker.bench.example"
AUDIENCE = "https://api.bench.example"
ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _rate(body: Callable[[int], None], seconds: float) -> float:
    """Operations per second of ``body(n)`` (n operations), with n calibrated to run about ``seconds``."""
    n = 64
    while True:
        started = time.perf_counter()
        body(n)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds * 0.25 or n >= 1 << 24:
            break
        n *= 4
    n = max(1, int(n * seconds / max(elapsed, 1e-9)))
    started = time.perf_counter()
    body(n)
    return n / (time.perf_counter() - started)


def sign_verify_rate(seconds: float) -> float:
    """One ES256 verify of a JWT-SVID-sized input plus one ES256 sign of an access-token-sized input."""
    svid_key = ec.generate_private_key(ec.SECP256R1())
    token_key = ec.generate_private_key(ec.SECP256R1())
    svid_input = b"e" * 290  # header.payload of a JWT-SVID here: ~290 bytes
    token_input = b"t" * 520  # header.payload of an access token here: ~520 bytes
    signature = svid_key.sign(svid_input, ECDSA_SHA256)
    public = svid_key.public_key()

    def loop(n: int) -> None:
        for _ in range(n):
            public.verify(signature, svid_input, ECDSA_SHA256)
            token_key.sign(token_input, ECDSA_SHA256)

    return _rate(loop, seconds)


def _token_and_verifier() -> tuple[str, bytes, AccessTokenVerifier, StaticJwksProvider]:
    ca = DevCA.ephemeral(TrustDomain.parse("bench.example"))
    svid = ca.issue_x509_svid(SpiffeId.parse("spiffe://bench.example/workload"), ttl=3600)
    key = SigningKey.generate()
    issuer = AccessTokenIssuer(issuer=ISSUER, key_store=InMemoryKeyStore(key))
    client = AuthenticatedClient(spiffe_id=svid.spiffe_id, leaf=svid.leaf)
    token = issuer.issue(client=client, audience=AUDIENCE, scopes=frozenset({"orders:read"}), max_lifetime=3600)
    provider = StaticJwksProvider.from_document(jwks([key]))
    verifier = AccessTokenVerifier(issuer=ISSUER, audience=AUDIENCE, jwks=provider)
    return token.token, svid.leaf.public_bytes(serialization.Encoding.DER), verifier, provider


def verifier_rates(seconds: float, rounds: int) -> dict[str, Any]:
    token, cert_der, verifier, provider = _token_and_verifier()
    jws = parse_compact(token)
    key = provider.cached_key(jws.header["kid"])  # the very key object the verifier uses
    assert key is not None
    raw_signature = b64url_decode(token.rsplit(".", 1)[1])
    der = encode_dss_signature(int.from_bytes(raw_signature[:32], "big"), int.from_bytes(raw_signature[32:], "big"))
    signing_input = jws.signing_input
    public_key = key.public_key

    def raw(n: int) -> None:
        for _ in range(n):
            public_key.verify(der, signing_input, ECDSA_SHA256)

    async def checks(n: int) -> None:
        verify = verifier.verify
        for _ in range(n):
            await verify(token, cert_der)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(checks(10))  # fails loudly if the token does not verify

        def through_verifier(n: int) -> None:
            loop.run_until_complete(checks(n))

        raw_rates, verifier_rates_ = [], []
        for _ in range(rounds):
            raw_rates.append(_rate(raw, seconds))
            verifier_rates_.append(_rate(through_verifier, seconds))
    finally:
        loop.close()
    return {
        "raw_verify_per_s": round(statistics.median(raw_rates), 1),
        "verifier_per_s": round(statistics.median(verifier_rates_), 1),
        "paired_ratio_median": round(
            statistics.median(v / r for r, v in zip(raw_rates, verifier_rates_, strict=True)), 3
        ),
        "raw_rounds": [round(r) for r in raw_rates],
        "verifier_rounds": [round(r) for r in verifier_rates_],
        "token_bytes": len(token),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.crypto")
    parser.add_argument("what", choices=["sign-verify", "verifier"])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.what == "sign-verify":
        result: dict[str, Any] = {"verify_plus_sign_per_s": round(sign_verify_rate(args.seconds), 1)}
    else:
        result = verifier_rates(args.seconds, args.rounds)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
