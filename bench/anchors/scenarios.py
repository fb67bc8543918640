"""Alternated rounds of one load generator against two servers, and what is reported about them.

A :class:`Scenario` pairs an anchor (Keycloak, the SPIRE agent) with its spiffe-broker counterpart. Every round
runs the anchor, then the broker (A, B, A, B, ...), each time as one ``bench.loadgen`` process pinned to the
generator's CPU, with the same concurrency and the same measured duration or request count. Before each round the
scenario's ``refresh`` runs (it re-mints the JWT-SVIDs in the request bodies, so none expires during a long run).

Server CPU per request is :func:`bench.procs.run_json`'s: the measured process's ``utime + stime`` from
``/proc/<pid>/stat`` (all threads: for Keycloak the JVM with its JIT and GC threads, for the SPIRE agent the Go
runtime) over the generator's run, divided by the requests of that run including its short warm-up. The summary
gives medians over rounds of each side, the ratio of the medians, and the median of the per-round ratios
("paired").
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.procs import Child, run_json
from bench.sidecar_bench import summarize

__all__ = ["Scenario", "Shape", "Target", "run_scenario", "warm_up"]


@dataclass(frozen=True)
class Shape:
    """How long each run measures (seconds, or a request count), its unmeasured warm-up, and the concurrency."""

    duration: float | None
    requests: int | None
    warmup: float
    concurrency: int

    def argv(self) -> list[str]:
        found = ["--concurrency", str(self.concurrency), "--warmup", str(self.warmup)]
        if self.requests is not None:
            return [*found, "--requests", str(self.requests), "--duration", "0"]
        return [*found, "--duration", str(self.duration)]


@dataclass(frozen=True)
class Target:
    """One side: a name, the measured process, and the generator's arguments (everything but the shape)."""

    name: str
    server: Child
    argv: list[str]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    anchor: Target
    broker: Target
    shape: Shape
    refresh: Callable[[], None] = lambda: None


def _run(target: Target, shape: Shape, generator_cpus: set[int] | None) -> dict[str, Any]:
    found = run_json([*target.argv, *shape.argv()], cpus=generator_cpus, watch=target.server, timeout=600.0)
    found["server"] = target.name
    return found


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def _side(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians (:func:`bench.sidecar_bench.summarize`), merged status counts, TLS connections and resumptions."""
    statuses: dict[str, int] = {}
    for run in runs:
        for code, count in run["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
    return {**summarize(runs), "statuses": statuses, "response_bytes": runs[-1]["response_bytes"],
            "tls_connections": sum(r["tls_connections"] for r in runs),
            "tls_resumed": sum(r["tls_resumed"] for r in runs), "tls": runs[-1].get("tls", "")}  # fmt: skip


def _compare(anchor: list[dict[str, Any]], broker: list[dict[str, Any]]) -> dict[str, Any]:
    a, b = _side(anchor), _side(broker)
    cpu = "server_cpu_us_per_request"
    pairs = list(zip(anchor, broker, strict=True))
    return {
        "anchor": a,
        "broker": b,
        "cpu_ratio": _ratio(a[cpu], b[cpu]),
        "cpu_ratio_paired": round(statistics.median(x[cpu] / y[cpu] for x, y in pairs), 3),
        "rps_ratio": _ratio(a["rps"], b["rps"]),
        "rps_ratio_paired": round(statistics.median(x["rps"] / y["rps"] for x, y in pairs), 3),
    }


def run_scenario(scenario: Scenario, *, rounds: int, generator_cpus: set[int] | None) -> dict[str, Any]:
    """``rounds`` alternated rounds; every run kept, plus the comparison."""
    runs: dict[str, list[dict[str, Any]]] = {"anchor": [], "broker": []}
    for _ in range(rounds):
        scenario.refresh()
        runs["anchor"].append(_run(scenario.anchor, scenario.shape, generator_cpus))
        runs["broker"].append(_run(scenario.broker, scenario.shape, generator_cpus))
    return {
        "title": scenario.title,
        "anchor_name": scenario.anchor.name,
        "broker_name": scenario.broker.name,
        "shape": scenario.shape.__dict__,
        **_compare(runs["anchor"], runs["broker"]),
        "rounds": runs,
    }


def warm_up(scenarios: Sequence[Scenario], *, seconds: float, chunk: float,
            generator_cpus: set[int] | None) -> dict[str, Any]:  # fmt: skip
    """Load the anchors (the JVM's JIT) with each scenario's own load in turn, ``chunk`` seconds at a time, until
    ``seconds`` have passed; record every chunk, and each scenario's first and last rate."""
    chunks: list[dict[str, Any]] = []
    spent = 0.0
    while spent < seconds:
        for scenario in scenarios:
            scenario.refresh()
            shape = Shape(duration=chunk, requests=None, warmup=0.0, concurrency=scenario.shape.concurrency)
            found = _run(scenario.anchor, shape, generator_cpus)
            spent += float(found["seconds"])
            kept = ("rps", "requests", "errors", "seconds", "server_cpu_us_per_request")
            chunks.append({"scenario": scenario.name, **{key: found.get(key) for key in kept}})
    by_name = {s.name: [c for c in chunks if c["scenario"] == s.name] for s in scenarios}
    return {
        "seconds": round(spent, 1),
        "requests": sum(c["requests"] for c in chunks),
        "rate_start": {name: found[0]["rps"] for name, found in by_name.items()},
        "rate_end": {name: found[-1]["rps"] for name, found in by_name.items()},
        "cpu_us_start": {name: found[0]["server_cpu_us_per_request"] for name, found in by_name.items()},
        "cpu_us_end": {name: found[-1]["server_cpu_us_per_request"] for name, found in by_name.items()},
        "chunks": chunks,
    }
