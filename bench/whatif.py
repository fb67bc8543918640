"""Diagnostic, not run by ``python -m bench``: what two caches would do to the token service's exchange rate.

``python -m bench.whatif [--rounds R]`` starts three token services (each its own process, pinned to CPU 0, the
generator on CPU 1), all built like ``spiffe-broker server --cert/--key`` with ``start_token_service`` and
logging INFO to a file as the CLI does, and measures them alternately:

* ``as_is``: the code as it is;
* ``cached_cert``: the per-request client certificate check (``peer_spiffe_id`` ->
  ``verify_leaf_against_bundle``: DER parse, SPIFFE leaf rules, issuer's CA checks, one ECDSA verify) done once
  per (certificate DER, bundle set object) instead of on every request of a keep-alive connection;
* ``cached_cert_jwt``: also a validated JWT-SVID remembered per (token, audience, bundle set object) until its
  ``exp`` (the SPIRE agent hands out the same JWT-SVID until half its lifetime, FACTS "SPIRE").

The caches are monkeypatched in this benchmark process only, to size the gain; a real implementation must also
re-check the certificate's validity period per request, bound the cache sizes, and drop entries when bundles
change. Prints one JSON line: per variant and grant, median req/s and server CPU microseconds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.exchange_bench import _loadgen_argv, exchange_bodies
from bench.procs import Child, free_port, pin, port_open, run_json, spawn, wait_until
from bench.stack import TRUST_DOMAIN, BrokerStack

__all__ = ["main"]

VARIANTS = ("as_is", "cached_cert", "cached_cert_jwt")


def _patch_client_certificate_check() -> None:
    from cryptography import x509

    import broker.server.request as request_module
    from broker.identity.x509svid import verify_leaf_against_bundle

    cache: dict[tuple[bytes, int], Any] = {}

    def peer_spiffe_id(ssl_object: Any, bundles: Any) -> Any:
        der = ssl_object.getpeercert(binary_form=True)
        key = (der, id(bundles))
        found = cache.get(key)
        if found is None:
            leaf = x509.load_der_x509_certificate(der)
            found = cache[key] = (verify_leaf_against_bundle(leaf, bundles), leaf)
        return found

    request_module.__dict__["peer_spiffe_id"] = peer_spiffe_id  # the name request.authenticate_client calls


def _patch_jwt_svid_validation() -> None:
    import broker.tokens.exchange as exchange_module

    validate = exchange_module.__dict__["validate_jwt_svid"]
    cache: dict[tuple[str, str, int], Any] = {}

    def cached(token: str, *, audience: str, bundles: Any, leeway: float = 30.0, now: float | None = None) -> Any:
        key = (token, audience, id(bundles))
        found = cache.get(key)
        if found is None or (time.time() if now is None else now) >= found.expiry + leeway:
            found = cache[key] = validate(token, audience=audience, bundles=bundles, leeway=leeway, now=now)
        return found

    exchange_module.__dict__["validate_jwt_svid"] = cached  # the name TokenExchangeService calls


async def _serve(root: Path, port: int) -> None:
    from broker.server.file_source import FileSvidSource, SvidFiles
    from broker.server.service import start_token_service
    from broker.tokens.keys import FileKeyStore
    from broker.tokens.policy import FilePolicyStore

    files = SvidFiles(cert=root / "srv.pem", key=root / "srv.key", x509_bundles={TRUST_DOMAIN: root / "bundle.pem"},
                      jwt_bundles={TRUST_DOMAIN: root / "jwks.json"})  # fmt: skip
    service = await start_token_service(
        source=FileSvidSource(files),
        policy_store=FilePolicyStore(root / "policy.yaml"),
        key_store=FileKeyStore(root / "srv"),
        listen_host="127.0.0.1",
        listen_port=port,
        issuer=f"https://127.0.0.1:{port}",
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await service.aclose()


def _start_variant(stack: BrokerStack, variant: str) -> tuple[Child, int]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.whatif", "--serve", variant, "--root", str(stack.files.root),
            "--port", str(port)]  # fmt: skip
    child = spawn(f"whatif-{variant}", argv, log_dir=stack.files.logs)
    stack.children[child.name] = child
    wait_until(lambda: port_open(port), timeout=60, what=f"the {variant} token service", child=child)
    return child, port


def measure(rounds: int, duration: float) -> dict[str, Any]:
    found: dict[str, dict[str, list[dict[str, Any]]]] = {variant: {} for variant in VARIANTS}
    with BrokerStack.create() as stack:
        servers = {variant: _start_variant(stack, variant) for variant in VARIANTS}
        for child, _ in servers.values():
            pin(child.pid, {0})
        for _ in range(rounds):
            for variant, (child, port) in servers.items():
                stack.server_port = port  # the JWT-SVID's audience is this server's issuer
                for grant, body in exchange_bodies(stack.jwt_svid()).items():
                    path = stack.files.root / f"{grant}.form"
                    path.write_bytes(body)
                    argv = _loadgen_argv(stack, port, str(path), concurrency=16, duration=duration, warmup=0.3)
                    found[variant].setdefault(grant, []).append(run_json(argv, cpus={1}, watch=child))
    return {
        variant: {
            grant: {
                "rps": round(statistics.median(r["rps"] for r in runs), 1),
                "server_cpu_us_per_request": round(statistics.median(r["server_cpu_us_per_request"] for r in runs), 1),
                "errors": sum(r["errors"] for r in runs),
            }
            for grant, runs in by_grant.items()
        }
        for variant, by_grant in found.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.whatif")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=1.5)
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is None:
        print(json.dumps(measure(args.rounds, args.duration)), flush=True)
        return
    # as `spiffe-broker server` logs by default (broker/cli/main.py): INFO to stderr, here the variant's log file
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.serve in ("cached_cert", "cached_cert_jwt"):
        _patch_client_certificate_check()
    if args.serve == "cached_cert_jwt":
        _patch_jwt_svid_validation()
    asyncio.run(_serve(args.root, args.port))


if __name__ == "__main__":
    main()
