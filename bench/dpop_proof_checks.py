"""DPoP proof checks per second against a raw ES256 verify (issue 11 acceptance; one process, one core).

``python -m bench.dpop_proof_checks --ops N --rounds R [--cpu C]`` measures, in alternated rounds of ``N``
operations each:

* ``raw``: ``cryptography``'s ES256 verify of one proof's signature over its signing input (DER signature and
  the public key prepared once): the floor no proof check can go under;
* ``check``: :func:`broker.oauth.dpop.check_proof` (RFC 9449 §4.3: parse, header, ``jwk`` import, signature,
  ``htm``/``htu`` normalised, ``iat`` window) on distinct proofs, as the token endpoint calls it;
* ``check+replay``: the same plus :func:`~broker.oauth.dpop.check_proof_unused` over a
  :class:`~broker.oauth.replay.MemoryReplayCache` (RFC 9449 §11.1), each proof once, as a resource server does.

Proofs are made before the clock starts (ES256, P-256, a fresh ``jti`` each; the same key, as one client's would
be). Prints one JSON line: the median rate of each, the per-round rates and the ratio to ``raw``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from broker.jose.jws import b64url_decode
from broker.oauth.dpop import check_proof, check_proof_unused, create_proof
from broker.oauth.replay import MemoryReplayCache

__all__ = ["dpop_rates", "main"]

HTU = "https://broker.bench.example/token"
MAX_AGE = 3600.0  # proofs are made before the rounds; the window's size costs nothing
ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _proofs(key: ec.EllipticCurvePrivateKey, count: int) -> list[str]:
    return [create_proof(key, htm="POST", htu=HTU) for _ in range(count)]


def _raw_verify(proof: str, key: ec.EllipticCurvePublicKey) -> Callable[[int], None]:
    signing_input, _, signature = proof.rpartition(".")
    raw = b64url_decode(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    data = signing_input.encode("ascii")

    def run(n: int) -> None:
        for _ in range(n):
            key.verify(der, data, ECDSA_SHA256)

    return run


def _checks(proofs: list[str], cache: MemoryReplayCache | None, loop: asyncio.AbstractEventLoop) -> None:
    async def run() -> None:
        for proof in proofs:
            now = time.time()
            checked = check_proof(proof, htm="POST", htu=HTU, now=now, leeway=10.0, max_age=MAX_AGE,
                                  algorithms=("ES256",))  # fmt: skip
            if cache is not None:
                await check_proof_unused(checked, cache, now=now, window=MAX_AGE + 10.0)

    loop.run_until_complete(run())


def _timed(body: Callable[[], None], ops: int) -> float:
    started = time.perf_counter()
    body()
    return ops / (time.perf_counter() - started)


def dpop_rates(ops: int, rounds: int) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    pool = _proofs(key, ops * (rounds + 1))
    raw = _raw_verify(pool[0], key.public_key())
    cache = MemoryReplayCache()
    loop = asyncio.new_event_loop()
    rates: dict[str, list[float]] = {"raw": [], "check": [], "check+replay": []}
    try:
        _checks(pool[:ops], cache, loop)  # warm-up; fails loudly if a proof does not pass
        for index in range(1, rounds + 1):
            fresh = pool[index * ops : (index + 1) * ops]
            rates["raw"].append(_timed(lambda: raw(ops), ops))
            rates["check"].append(_timed(lambda fresh=fresh: _checks(fresh, None, loop), ops))  # type: ignore[misc]
            rates["check+replay"].append(_timed(lambda fresh=fresh: _checks(fresh, cache, loop), ops))  # type: ignore[misc]
    finally:
        loop.close()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "raw_es256_verify_per_s": round(medians["raw"], 1),
        "check_proof_per_s": round(medians["check"], 1),
        "check_proof_and_replay_per_s": round(medians["check+replay"], 1),
        "check_ratio": round(medians["check"] / medians["raw"], 3),
        "check_and_replay_ratio": round(medians["check+replay"] / medians["raw"], 3),
        "rounds": {name: [round(value) for value in values] for name, values in rates.items()},
        "proof_bytes": len(pool[0]),
        "ops_per_round": ops,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dpop_proof_checks")
    parser.add_argument("--ops", type=int, default=5000, help="operations per round and kind")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    print(json.dumps(dpop_rates(args.ops, args.rounds)), flush=True)


if __name__ == "__main__":
    main()
