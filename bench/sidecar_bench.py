"""(a) cached tokens from the sidecar over its Unix socket vs a bare aiohttp handler, and (d) the sidecar's memory.

Both servers are separate processes and get the same CPU (CPU 0 when there are two or more); the load generator
(``bench.loadgen``, its own process) gets the other one. Runs alternate reference, sidecar, reference, sidecar,
... for every concurrency; the report gives the medians over the rounds. (d) is measured on the same sidecar:
``VmRSS`` after start-up and one request, after exactly 10,000 more requests (the first load it sees), and at the
end, with ``VmHWM`` (peak).
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from bench.procs import Child, cpu_count, pin, run_json
from bench.stack import AUDIENCE, SCOPE, BrokerStack, fetch_unix

__all__ = ["TOKEN_PATH", "loadgen_argv", "run_sidecar_bench", "summarize"]

TOKEN_PATH = "/v1/token?" + urlencode({"audience": AUDIENCE, "scope": SCOPE})
MEMORY_REQUESTS = 10_000
COMPARED_HEADERS = ("Content-Type", "Cache-Control", "Pragma", "Content-Length")


def loadgen_argv(socket_path: str, *, concurrency: int, duration: float, warmup: float, client: str) -> list[str]:
    return [sys.executable, "-m", "bench.loadgen", "--unix", socket_path, "--path", TOKEN_PATH,
            "--concurrency", str(concurrency), "--duration", str(duration), "--warmup", str(warmup),
            "--client", client]  # fmt: skip


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of req/s, p50 and p99, plus every round's req/s."""
    return {
        "rps": round(statistics.median(r["rps"] for r in runs), 1),
        "p50_us": round(statistics.median(r["p50_us"] for r in runs), 1),
        "p99_us": round(statistics.median(r["p99_us"] for r in runs), 1),
        "server_cpu_us_per_request": round(statistics.median(r["server_cpu_us_per_request"] for r in runs), 1),
        "generator_cpu_us_per_request": round(statistics.median(r["generator_cpu_us_per_request"] for r in runs), 1),
        "errors": sum(r["errors"] for r in runs),
        "rounds_rps": [r["rps"] for r in runs],
    }


def _memory(child: Child) -> dict[str, float]:
    kib = child.memory_kib()
    return {
        "rss_kib": kib["VmRSS"],
        "rss_mib": round(kib["VmRSS"] / 1024, 1),
        "hwm_mib": round(kib["VmHWM"] / 1024, 1),
        "anon_mib": round(kib["RssAnon"] / 1024, 1),
        "file_mib": round(kib["RssFile"] / 1024, 1),
    }


def _capture_response(stack: BrokerStack) -> bytes:
    status, body, _headers = fetch_unix(stack.files.sidecar_socket, TOKEN_PATH)
    if status != 200:
        raise RuntimeError(f"sidecar answered {status} to the first token request: {body[:200]!r}")
    return body


def _check_same_response(stack: BrokerStack) -> dict[str, Any]:
    """The reference must answer with the sidecar's bytes and headers (``Date``/``Server`` aside)."""
    _, sidecar_body, sidecar_headers = fetch_unix(stack.files.sidecar_socket, TOKEN_PATH)
    _, ref_body, ref_headers = fetch_unix(stack.files.ref_socket, TOKEN_PATH)
    same_headers = all(sidecar_headers.get(h) == ref_headers.get(h) for h in COMPARED_HEADERS)
    if len(ref_body) != len(sidecar_body) or not same_headers:
        raise RuntimeError("reference response differs from the sidecar's")
    return {"response_bytes": len(sidecar_body), "headers": {h: sidecar_headers.get(h) for h in COMPARED_HEADERS}}


def _layout() -> tuple[set[int] | None, set[int] | None]:
    """(server CPUs, generator CPUs): one core each when there are at least two."""
    cpus = sorted(os.sched_getaffinity(0))
    if cpu_count() < 2:
        return None, None
    return {cpus[0]}, {cpus[1]}


@dataclass(frozen=True)
class _Sides:
    """The two servers compared in (a), their sockets, and where the generator runs."""

    servers: dict[str, Child]
    sockets: dict[str, str]
    generator_cpus: set[int] | None


def _memory_first(stack: BrokerStack, sidecar: Child, generator_cpus: set[int] | None, client: str) -> dict[str, Any]:
    """(d): RSS after start-up (and one request), then after exactly 10,000 requests at concurrency 32."""
    memory: dict[str, Any] = {"after_start": _memory(sidecar)}
    argv = loadgen_argv(str(stack.files.sidecar_socket), concurrency=32, duration=0, warmup=0, client=client)
    load = run_json([*argv, "--requests", str(MEMORY_REQUESTS)], cpus=generator_cpus)
    memory["after_10k"] = _memory(sidecar)
    memory["load_10k"] = {"requests": load["requests"], "errors": load["errors"], "rps": load["rps"]}
    return memory


def _compare(
    sides: _Sides, *, concurrency: int, rounds: int, duration: float, warmup: float, client: str
) -> dict[str, Any]:
    """Alternate reference and sidecar runs; medians of each side and their ratio."""
    runs: dict[str, list[dict[str, Any]]] = {"reference": [], "sidecar": []}
    for _ in range(rounds):
        for side in ("reference", "sidecar"):
            argv = loadgen_argv(sides.sockets[side], concurrency=concurrency, duration=duration, warmup=warmup,
                                client=client)  # fmt: skip
            runs[side].append(run_json(argv, cpus=sides.generator_cpus, watch=sides.servers[side]))
    ref, sub = summarize(runs["reference"]), summarize(runs["sidecar"])
    paired = [s["rps"] / r["rps"] for r, s in zip(runs["reference"], runs["sidecar"], strict=True)]
    return {
        "reference": ref,
        "sidecar": sub,
        "ratio": round(sub["rps"] / ref["rps"], 3),
        "paired_ratio_median": round(statistics.median(paired), 3),
        "sidecar_requests": sum(r["requests"] + r["warmup_requests"] for r in runs["sidecar"]),
    }


def run_sidecar_bench(
    stack: BrokerStack,
    *,
    concurrencies: Sequence[int] = (1, 32),
    rounds: int = 3,
    duration: float = 2.0,
    warmup: float = 0.5,
    client: str = "raw",
    aiohttp_check: bool = True,
) -> dict[str, Any]:
    """Start the stack and the reference, measure, return (a) and (d) results (the stack is left running)."""
    stack.start_workload_api()
    stack.start_server()
    sidecar = stack.start_sidecar()
    body = _capture_response(stack)
    server_cpus, generator_cpus = _layout()
    pin(sidecar.pid, server_cpus)
    memory = _memory_first(stack, sidecar, generator_cpus, client)
    reference = stack.start_reference(body)
    pin(reference.pid, server_cpus)
    results: dict[str, Any] = {"response": _check_same_response(stack), "client": client, "by_concurrency": {}}
    sides = _Sides(
        servers={"reference": reference, "sidecar": sidecar},
        sockets={"reference": str(stack.files.ref_socket), "sidecar": str(stack.files.sidecar_socket)},
        generator_cpus=generator_cpus,
    )
    served = MEMORY_REQUESTS + 1
    for concurrency in concurrencies:
        found = _compare(sides, concurrency=concurrency, rounds=rounds, duration=duration, warmup=warmup, client=client)
        served += found["sidecar_requests"]
        results["by_concurrency"][str(concurrency)] = found
    if aiohttp_check and client != "aiohttp":
        results["aiohttp_client_c32"] = _aiohttp_check(sides, duration, warmup)
    memory["end"] = {**_memory(sidecar), "requests_served": served}
    memory["reference_end"] = _memory(reference)
    results["memory"] = memory
    results["cpus"] = {"servers": sorted(server_cpus or []), "generator": sorted(generator_cpus or [])}
    return results


def _aiohttp_check(sides: _Sides, duration: float, warmup: float) -> dict[str, Any]:
    """One round at concurrency 32 with aiohttp's own client as the generator, to show where it saturates."""
    found: dict[str, Any] = {}
    for side in ("reference", "sidecar"):
        argv = loadgen_argv(sides.sockets[side], concurrency=32, duration=duration, warmup=warmup, client="aiohttp")
        run = run_json(argv, cpus=sides.generator_cpus, watch=sides.servers[side])
        found[side] = {key: run[key] for key in ("rps", "p50_us", "p99_us", "cpu_s", "seconds", "server_cpu_s")}
    found["ratio"] = round(found["sidecar"]["rps"] / found["reference"]["rps"], 3)
    return found
