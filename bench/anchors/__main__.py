"""``python -m bench.anchors``: Keycloak and the SPIRE agent beside spiffe-broker; table + bench/results-anchors.json.

    python -m bench.anchors              # all three scenarios, about 10 minutes on 2 cores
    python -m bench.anchors --quick      # a smoke run (short warm-up, one short round): not for quoting
    python -m bench.anchors --only 1,3   # 1: mTLS client_credentials (keep-alive, new connection, resumption),
                                         # 2: JWT-SVID (Keycloak jwt-spiffe vs broker token exchange),
                                         # 3: cached JWT (SPIRE agent FetchJWTSVID vs the sidecar)
    python -m bench.anchors --keep       # keep the run directory (logs, bodies, certificates) in /tmp

Method: start everything (:mod:`bench.anchors.testbed`), pin the measured processes to CPU 0 and the load
generator to CPU 1, send one request per HTTPS side and record its token's shape, warm Keycloak's JIT with the
same loads (:func:`bench.anchors.scenarios.warm_up`, 3 minutes in a full run), then run each scenario's
alternated rounds (:mod:`bench.anchors.scenarios`). Other processes' CPU use is recorded for every part
(``machine_load``), as ``python -m bench`` does. Not part of CI. Results: docs/benchmarks.md, "Anchors".
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bench.anchors.report import render
from bench.anchors.samples import describe_token, post_form
from bench.anchors.scenarios import Shape, run_scenario, warm_up
from bench.anchors.targets import broker_bodies, build_scenarios, keycloak_bodies
from bench.anchors.testbed import Bed, everything, measured, started
from bench.procs import MachineLoad, cpu_count, wait_for_quiet
from bench.report import machine_info

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "results-anchors.json"
CONCURRENCY = 16


@dataclass(frozen=True)
class Plan:
    rounds: int
    duration: float
    warmup: float
    cached_requests: int
    jit_warmup: float
    jit_chunk: float


FULL = Plan(rounds=5, duration=3.0, warmup=0.3, cached_requests=20_000, jit_warmup=180.0, jit_chunk=10.0)
QUICK = Plan(rounds=1, duration=0.5, warmup=0.2, cached_requests=2_000, jit_warmup=12.0, jit_chunk=2.0)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.anchors", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="1,2,3", help="comma-separated subset of 1,2,3  [default: all]")
    parser.add_argument("--quick", action="store_true", help="a smoke run: checks the harness, numbers not quotable")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (process logs) in /tmp")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results JSON  [default: %(default)s]")
    parser.add_argument("--wait-quiet", type=float, default=30.0, help="wait up to this long for idle CPUs first")
    args = parser.parse_args(argv)
    args.only = {part.strip() for part in args.only.split(",") if part.strip()}
    if not args.only or not args.only <= {"1", "2", "3"}:
        parser.error("--only takes a comma-separated subset of 1,2,3")
    return args


def _generator_cpus() -> set[int] | None:
    return {1} if cpu_count() >= 2 else None


def _samples(bed: Bed, parts: set[str]) -> dict[str, Any]:
    """One request per HTTPS side (it must succeed); the shape of each token."""
    found: dict[str, Any] = {}
    if not parts & {"1", "2"} or bed.keycloak is None:
        return found
    files = bed.stack.files
    sides = {"keycloak": (f"{bed.keycloak.issuer}/protocol/openid-connect/token", bed.ca.root, keycloak_bodies(bed)),
             "broker": (f"{bed.stack.issuer}/token", files.bundle, broker_bodies(bed))}  # fmt: skip
    for side, (url, ca, bodies) in sides.items():
        for kind, body in bodies.items():
            status, answer = post_form(url, body, ca=ca, cert=files.client_cert, key=files.client_key)
            found[f"{side}_{kind}"] = describe_token(status, answer, what=f"{side} {kind}")
    return found


def _git_head() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def _measure(bed: Bed, args: argparse.Namespace, plan: Plan, results: dict[str, Any]) -> None:
    token = Shape(duration=plan.duration, requests=None, warmup=plan.warmup, concurrency=CONCURRENCY)
    cached = Shape(duration=None, requests=plan.cached_requests, warmup=plan.warmup, concurrency=CONCURRENCY)
    scenarios = build_scenarios(bed, args.only, token_shape=token, cached_shape=cached)
    results["samples"] = _samples(bed, args.only)
    loads = results.setdefault("machine_load", {})
    meter = MachineLoad(children=lambda: everything(bed))
    keycloak_loads = [s for s in scenarios if s.anchor.name == "keycloak"]
    if keycloak_loads:
        meter.start()
        results["keycloak_warmup"] = warm_up(keycloak_loads, seconds=plan.jit_warmup, chunk=plan.jit_chunk,
                                             generator_cpus=_generator_cpus())  # fmt: skip
        loads["keycloak_warmup"] = meter.stop()
    results["scenarios"] = {}
    for scenario in scenarios:
        meter.start()
        found = run_scenario(scenario, rounds=plan.rounds, generator_cpus=_generator_cpus())
        results["scenarios"][scenario.name] = found
        loads[scenario.name] = meter.stop()
        print(f"{scenario.name}: done", file=sys.stderr, flush=True)
    results["rss_mib_at_end"] = {child.name: round(child.memory_kib()["VmRSS"] / 1024, 1) for child in measured(bed)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "plan": asdict(plan) | {"concurrency": CONCURRENCY},
        "machine": machine_info(),
        "broker_commit": _git_head(),
        "quiet_wait": wait_for_quiet(limit=args.wait_quiet) if args.wait_quiet > 0 else None,
    }
    with started(args.only, keep=args.keep) as bed:
        results["versions"] = bed.facts
        results["cpus"] = {"servers": [0], "generator": sorted(_generator_cpus() or [])}
        _measure(bed, args, plan, results)
        if bed.bundle is not None:
            results["versions"]["keycloak"]["bundle_endpoint_requests"] = bed.bundle.requests
        if args.keep:
            results["run_dir"] = str(bed.stack.files.root)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return results


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the test bed, which stops every process


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background (SIG_IGN)
    started_at = time.monotonic()
    results = run(args)
    results["wall_s"] = round(time.monotonic() - started_at, 1)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(render(results))
    warm = results.get("keycloak_warmup")
    if warm:
        print(f"\nKeycloak warm-up: {warm['seconds']} s, {warm['requests']} requests; "
              f"rate at start {warm['rate_start']}, at end {warm['rate_end']}")  # fmt: skip
    loads = ", ".join(f"{name}: {load['foreign_cores']:.2f}" for name, load in results["machine_load"].items())
    print(f"other processes' CPU use (cores) during each part: {loads}")
    print(f"wall time {results['wall_s']} s; results written to {args.output}")


if __name__ == "__main__":
    main()
