"""``python -m bench``: run the benchmarks, print the table, write ``bench/results.json``.

    python -m bench                 # all six, about 6 minutes on 2 cores
    python -m bench --quick         # all six, short runs (a smoke test, not for quoting)
    python -m bench --only a,d      # pick: a (sidecar vs bare aiohttp), b (token exchanges), c (verifier),
                                    #       d (sidecar memory; measured with a, or alone),
                                    #       e (ledger + audit on vs off, SQLite and PostgreSQL),
                                    #       f (2 replicas vs 1 on PostgreSQL),
                                    #       g (the revocation feed with 10,000 followers; not in the default set),
                                    #       h (private_key_jwt + replay cache vs mTLS, PostgreSQL and SQLite;
                                    #          not in the default set),
                                    #       i (DPoP proof checks vs a raw ES256 verify; not in the default set),
                                    #       j (the sidecar's egress proxy vs calling the target directly;
                                    #          not in the default set),
                                    #       k (metrics and JSON logs on vs off; not in the default set)

Method and results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.assertion_bench import run_assertion_bench
from bench.egress_bench import run_egress_bench
from bench.exchange_bench import run_exchange_bench
from bench.feed_bench import run_feed_bench
from bench.observability_bench import CONFIGS, run_observability_bench
from bench.procs import MachineLoad, cpu_count, run_json, wait_for_quiet
from bench.report import TARGETS, machine_info, notes, render_table, table_rows
from bench.sidecar_bench import run_sidecar_bench
from bench.stack import BrokerStack
from bench.store_bench import Load, Postgres, run_replica_bench, run_store_bench

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.json"


@dataclass(frozen=True)
class Plan:
    """Durations and rounds."""

    rounds_a: int
    duration_a: float
    rounds_b: int
    duration_b: float
    warmup: float
    reference_seconds: float
    rounds_c: int
    seconds_c: float
    rounds_e: int
    duration_e: float
    rounds_f: int
    duration_f: float
    rounds_h: int
    duration_h: float
    rounds_i: int
    ops_i: int
    rounds_j: int
    duration_j: float
    rounds_k: int = 5
    duration_k: float = 4.0


FULL = Plan(rounds_a=7, duration_a=1.0, rounds_b=5, duration_b=1.5, warmup=0.3, reference_seconds=0.5, rounds_c=9,
            seconds_c=0.3, rounds_e=7, duration_e=2.0, rounds_f=7, duration_f=2.0, rounds_h=7, duration_h=2.0,
            rounds_i=7, ops_i=5000, rounds_j=5, duration_j=1.0)  # fmt: skip
QUICK = Plan(rounds_a=1, duration_a=0.5, rounds_b=1, duration_b=0.5, warmup=0.2, reference_seconds=0.2, rounds_c=3,
             seconds_c=0.1, rounds_e=1, duration_e=0.5, rounds_f=1, duration_f=0.5, rounds_h=1, duration_h=0.5,
             rounds_i=3, ops_i=500, rounds_j=1, duration_j=0.3, rounds_k=1, duration_k=0.5)  # fmt: skip
PARTS = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="spiffe-broker benchmarks (issue 3)")
    parser.add_argument("--only", default="a,b,c,d,e,f", help="comma-separated subset of a-k  [default: a-f]")
    parser.add_argument("--quick", action="store_true", help="short runs: checks the harness, numbers not quotable")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results JSON  [default: %(default)s]")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=30.0,
        help="first wait up to this many seconds for other processes to leave the CPUs idle  [default: 30]",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directory (process logs) in /tmp")
    args = parser.parse_args(argv)
    args.only = {part.strip() for part in args.only.split(",") if part.strip()}
    if not args.only or not args.only <= PARTS:
        parser.error("--only takes a comma-separated subset of a,b,c,d,e,f,g,h,i,j,k")
    return args


def _first_cpu() -> set[int] | None:
    """The servers' CPU (single-core measurements run there too), when there are two or more."""
    return {min(os.sched_getaffinity(0))} if cpu_count() >= 2 else None


def _verifier(plan: Plan) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.crypto", "verifier", "--seconds", str(plan.seconds_c),
            "--rounds", str(plan.rounds_c)]  # fmt: skip
    return run_json(argv, cpus=_first_cpu())


def _last_cpu() -> set[int] | None:
    """The generators' CPU (where (i) runs, as in its own docstring's example), when there are two or more."""
    return {max(os.sched_getaffinity(0))} if cpu_count() >= 2 else None


def _dpop_proof_checks(plan: Plan) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.dpop_proof_checks", "--ops", str(plan.ops_i), "--rounds", str(plan.rounds_i)]
    return run_json(argv, cpus=_last_cpu(), timeout=600.0)


def _with_load(results: dict[str, Any], name: str, meter: MachineLoad) -> None:
    results.setdefault("machine_load", {})[name] = meter.stop()


def _sidecar_part(stack: BrokerStack, args: argparse.Namespace, plan: Plan, results: dict[str, Any]) -> None:
    meter = MachineLoad(children=lambda: list(stack.children.values()))
    meter.start()
    results["sidecar"] = run_sidecar_bench(
        stack,
        concurrencies=(1, 32) if "a" in args.only else (),
        rounds=plan.rounds_a,
        duration=plan.duration_a,
        warmup=plan.warmup,
        aiohttp_check="a" in args.only,
    )
    _with_load(results, "a_d", meter)
    results["sidecar"]["memory"]["imports"] = run_json([sys.executable, "-m", "bench.memory"])


def _exchange_part(stack: BrokerStack, args: argparse.Namespace, plan: Plan, results: dict[str, Any]) -> None:
    meter = MachineLoad(children=lambda: list(stack.children.values()))
    meter.start()
    results["exchange"] = run_exchange_bench(
        stack, rounds=plan.rounds_b, duration=plan.duration_b, warmup=plan.warmup,
        reference_seconds=plan.reference_seconds,
    )  # fmt: skip
    _with_load(results, "b", meter)
    breakdown = [sys.executable, "-m", "bench.breakdown", "--rounds", str(plan.rounds_c)]
    results["exchange"]["breakdown_us"] = run_json(breakdown, cpus=_first_cpu())


def _store_parts(args: argparse.Namespace, plan: Plan, results: dict[str, Any]) -> None:
    """(e), (f) and (h): their own token services and a private PostgreSQL, alongside nothing else."""
    postgres = Postgres.start()
    try:
        with BrokerStack.create(keep=args.keep) as stack:
            meter = MachineLoad(children=lambda: list(stack.children.values()))
            if "e" in args.only:
                meter.start()
                results["store"] = run_store_bench(stack, postgres, Load(plan.rounds_e, plan.duration_e, plan.warmup))
                _with_load(results, "e", meter)
            if "f" in args.only:
                meter.start()
                load = Load(plan.rounds_f, plan.duration_f, plan.warmup)
                results["replicas"] = run_replica_bench(stack, postgres, load)
                _with_load(results, "f", meter)
            if "h" in args.only:
                meter.start()
                load = Load(plan.rounds_h, plan.duration_h, plan.warmup)
                results["assertions"] = run_assertion_bench(stack, postgres, load)
                _with_load(results, "h", meter)
    finally:
        postgres.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "plan": plan.__dict__,
        "machine": machine_info(),
        "targets": TARGETS,
        "quiet_wait": wait_for_quiet(limit=args.wait_quiet) if args.wait_quiet > 0 else None,
    }
    if "c" in args.only:
        meter = MachineLoad(children=list)
        meter.start()
        results["verifier"] = _verifier(plan)
        _with_load(results, "c", meter)
    if args.only & {"a", "b", "d"}:
        with BrokerStack.create(keep=args.keep) as stack:
            if args.only & {"a", "d"}:
                _sidecar_part(stack, args, plan, results)
            if "b" in args.only:
                _exchange_part(stack, args, plan, results)
            if args.keep:
                results["run_dir"] = str(stack.files.root)
    if args.only & {"e", "f", "h"}:
        _store_parts(args, plan, results)
    if "i" in args.only:
        meter = MachineLoad(children=list)
        meter.start()
        results["dpop"] = _dpop_proof_checks(plan)
        _with_load(results, "i", meter)
    if "g" in args.only:
        meter = MachineLoad(children=list)
        meter.start()
        followers, events = (1000, 3) if args.quick else (10_000, 20)
        results["feed"] = run_feed_bench(followers=followers, events=events, keep=args.keep)
        _with_load(results, "g", meter)
    if "j" in args.only:
        meter = MachineLoad(children=list)
        meter.start()
        results["egress"] = run_egress_bench(rounds=plan.rounds_j, duration=plan.duration_j, warmup=plan.warmup,
                                             keep=args.keep)  # fmt: skip
        _with_load(results, "j", meter)
    if "k" in args.only:
        meter = MachineLoad(children=list)
        meter.start()
        results["observability"] = run_observability_bench(
            rounds=plan.rounds_k, duration=plan.duration_k, warmup=plan.warmup, sidecar_duration=plan.duration_k / 2,
            names=list(CONFIGS), keep=args.keep,
        )  # fmt: skip
        _with_load(results, "k", meter)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return results


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    started = time.monotonic()
    results = run(args)
    results["wall_s"] = round(time.monotonic() - started, 1)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(render_table(table_rows(results)))
    for line in notes(results):
        print(line)
    loads = ", ".join(f"{name}: {load['foreign_cores']:.2f}" for name, load in results.get("machine_load", {}).items())
    print(f"\nother processes' CPU use (cores) during each part: {loads}")
    print(f"wall time {results['wall_s']} s; results written to {args.output}")


if __name__ == "__main__":
    main()
