"""(b) token exchanges per second through keep-alive mTLS connections to ``spiffe-broker server``.

The token service runs in its own process with its SVID from files; the load generator (``bench.loadgen``, its
own process) acts as the workload: mutual TLS with the workload's X.509-SVID over ``--concurrency`` keep-alive
connections, POSTing RFC 8693 token exchanges (a JWT-SVID as ``subject_token``) or ``client_credentials``
requests. Two CPU layouts: ``shared`` (no pinning: server and generator share both cores) and ``pinned`` (server
on CPU 0, generator on CPU 1: the server process gets one core to itself). The reference, run in a process
pinned to the server's core and alternated with the measurements, is a ``cryptography`` loop of one ES256
verify plus one ES256 sign: the bare cryptography of one exchange.

Besides the throughput the generator sees, the server's own CPU time per exchange is reported: its inverse is
what one fully busy server process sustains, independent of how much CPU the generator (or anything else on the
machine) took.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from bench.procs import Child, cpu_count, pin, run_json
from bench.sidecar_bench import summarize
from bench.stack import AUDIENCE, SCOPE, BrokerStack

__all__ = ["exchange_bodies", "run_exchange_bench"]

GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
FORM = "application/x-www-form-urlencoded"


def exchange_bodies(jwt_svid: str) -> dict[str, bytes]:
    """The two request bodies: RFC 8693 token exchange and RFC 6749 §4.4 client credentials."""
    exchange = {"grant_type": GRANT_TOKEN_EXCHANGE, "subject_token": jwt_svid, "subject_token_type": TOKEN_TYPE_JWT,
                "audience": AUDIENCE, "scope": SCOPE}  # fmt: skip
    credentials = {"grant_type": "client_credentials", "audience": AUDIENCE, "scope": SCOPE}
    return {"token_exchange": urlencode(exchange).encode(), "client_credentials": urlencode(credentials).encode()}


def _loadgen_argv(
    stack: BrokerStack, port: int, body_file: str, *, concurrency: int, duration: float, warmup: float
) -> list[str]:
    files = stack.files
    return [sys.executable, "-m", "bench.loadgen", "--tcp", f"127.0.0.1:{port}",
            "--tls-ca", str(files.bundle), "--tls-cert", str(files.client_cert), "--tls-key", str(files.client_key),
            "--method", "POST", "--path", "/token", "--body-file", body_file, "--content-type", FORM,
            "--concurrency", str(concurrency), "--duration", str(duration), "--warmup", str(warmup)]  # fmt: skip


def _reference(seconds: float, cpus: set[int] | None) -> float:
    result = run_json([sys.executable, "-m", "bench.crypto", "sign-verify", "--seconds", str(seconds)], cpus=cpus)
    return float(result["verify_plus_sign_per_s"])


def _layouts() -> dict[str, tuple[set[int] | None, set[int] | None]]:
    """CPU layouts: (server CPUs, generator CPUs)."""
    layouts: dict[str, tuple[set[int] | None, set[int] | None]] = {"shared": (None, None)}
    if cpu_count() >= 2:
        cpus = sorted(os.sched_getaffinity(0))
        layouts["pinned"] = ({cpus[0]}, {cpus[1]})
    return layouts


def run_exchange_bench(
    stack: BrokerStack,
    *,
    grants: Sequence[str] = ("token_exchange", "client_credentials"),
    rounds: int = 3,
    duration: float = 2.0,
    warmup: float = 0.5,
    concurrency: int = 16,
    reference_seconds: float = 0.5,
) -> dict[str, Any]:
    """Measure against the stack's token service (started here if needed) and the bare aiohttp floor.

    Each round runs: the crypto reference, the bare aiohttp server, then each grant against the token service.
    """
    server = stack.children.get("server") or stack.start_server()
    bare, bare_port = stack.start_exchange_reference()
    body_files = {}
    for grant, body in exchange_bodies(stack.jwt_svid()).items():
        path = stack.files.root / f"{grant}.form"
        path.write_bytes(body)
        body_files[grant] = str(path)

    def load(port: int, grant: str, cpus: set[int] | None, watch: Child) -> dict[str, Any]:
        argv = _loadgen_argv(stack, port, body_files[grant], concurrency=concurrency, duration=duration, warmup=warmup)
        return run_json(argv, cpus=cpus, watch=watch)

    results: dict[str, Any] = {"concurrency": concurrency, "layouts": {}}
    reference_runs: list[float] = []
    for layout, (server_cpus, generator_cpus) in _layouts().items():
        pin(server.pid, server_cpus)
        pin(bare.pid, server_cpus)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ("bare_aiohttp", *grants)}
        for _ in range(rounds):
            reference_runs.append(_reference(reference_seconds, server_cpus or {0}))
            runs["bare_aiohttp"].append(load(bare_port, "token_exchange", generator_cpus, bare))
            for grant in grants:
                runs[grant].append(load(stack.server_port, grant, generator_cpus, server))
        results["layouts"][layout] = {name: _grant_summary(found) for name, found in runs.items()}
    pin(server.pid, None)
    results["reference_verify_plus_sign_per_s"] = round(statistics.median(reference_runs), 1)
    results["reference_rounds"] = [round(r) for r in reference_runs]
    return results


def _grant_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary = summarize(runs)
    cpu_us = summary["server_cpu_us_per_request"]
    summary["per_server_core_s"] = round(1e6 / cpu_us, 1) if cpu_us else None
    summary["statuses"] = _merge_statuses(runs)
    return summary


def _merge_statuses(runs: list[dict[str, Any]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for run in runs:
        for code, count in run["statuses"].items():
            merged[code] = merged.get(code, 0) + count
    return merged
