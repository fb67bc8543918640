"""(k) the cost of Prometheus metrics and JSON logs per request, on against off in one run (issue 13 acceptance).

``python -m bench.observability_bench --rounds 5 --duration 4 --output bench/results-k.json``

Token exchanges as in (b) and (e): ``bench.loadgen`` over 16 keep-alive mutual-TLS connections POSTing RFC 8693
token exchanges (a JWT-SVID as ``subject_token``) to ``spiffe-broker server`` processes started by their CLI with
the stateful SQLite store in their own state directories, the shared KEK, policy and identity. Each writes its
log to a file (``logs/<name>.log`` in the run directory: not a terminal, as in production). The services, started
once and measured in turn in every round:

* ``off``: ``SPIFFE_BROKER_METRICS__ENABLED=false``, text log at INFO (the baseline);
* ``off2``: the same as ``off``, a second process (an A/A control: how far two identical services differ);
* ``metrics``: metrics on (the default) with ``[metrics] port`` set, ``GET /metrics`` scraped every second
  while it is under load;
* ``metrics_json``: the same plus ``--log-format json`` (``SPIFFE_BROKER_LOG_FORMAT=json``);
* ``json``: metrics off, JSON log (JSON against text alone, compared with ``off``);
* ``warning``: metrics off, text log at WARNING (no access line, no "issued token" line: what the two INFO
  lines per request cost, compared with ``off``).

Layout: every token service on the first CPU, the generator on the second (the scraper, in this process, is a
GET a second). Reported per service: medians of req/s, p50, p99, server CPU per exchange, log bytes per
exchange, and the ratios against ``off``, with the median of per-round ratios.

The sidecar's cache-hit path (``GET /v1/token`` on its Unix socket, concurrency 32 as in (a)) is measured the
same way with two sidecars, metrics on (scraped every second) and off, alternated.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.exchange_bench import exchange_bodies
from bench.procs import BROKER_CLI, Child, MachineLoad, free_port, pin, run_json, wait_for_quiet, wait_until
from bench.report import machine_info
from bench.sidecar_bench import TOKEN_PATH, loadgen_argv
from bench.stack import START_TIMEOUT, BrokerStack, fetch_unix

__all__ = ["CONFIGS", "run_observability_bench"]

CONCURRENCY = 16
SIDECAR_CONCURRENCY = 32
METRICS_OFF = {"SPIFFE_BROKER_METRICS__ENABLED": "false"}
JSON_LOG = {"SPIFFE_BROKER_LOG_FORMAT": "json"}


@dataclass(frozen=True)
class Config:
    """One token service configuration: environment, log level, whether /metrics is served and scraped."""

    env: dict[str, str]
    log_level: str = "INFO"
    scraped: bool = False


CONFIGS: dict[str, Config] = {
    "off": Config(METRICS_OFF),
    "off2": Config(METRICS_OFF),
    "metrics": Config({}, scraped=True),
    "metrics_unscraped": Config({}),
    "metrics_json": Config(JSON_LOG, scraped=True),
    "json": Config({**METRICS_OFF, **JSON_LOG}),
    "warning": Config(METRICS_OFF, log_level="WARNING"),
}


@dataclass
class Service:
    name: str
    child: Child
    port: int
    metrics_port: int | None
    body_file: str


class Scraper:
    """GET ``url`` every ``interval`` seconds in a thread while active; counts scrapes and bytes."""

    def __init__(self, url: str, interval: float = 1.0) -> None:
        self.url = url
        self.interval = interval
        self.scrapes = 0
        self.bytes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:  # plain-HTTP metrics port
                    self.bytes += len(response.read())
                    self.scrapes += 1
            except OSError:
                self.failures += 1
            self._stop.wait(self.interval)

    @contextmanager
    def active(self) -> Iterator[None]:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join()


def _start_services(stack: BrokerStack, names: list[str]) -> dict[str, Service]:
    services = {}
    for name in names:
        config = CONFIGS[name]
        env = dict(config.env)
        metrics_port = None
        if config.scraped:
            metrics_port = free_port()
            env["SPIFFE_BROKER_METRICS__PORT"] = str(metrics_port)
        child, port = stack.start_named_server(name, env=env, log_level=config.log_level)
        body = exchange_bodies(stack.jwt_svid(issuer=f"https://127.0.0.1:{port}", ttl=3600))["token_exchange"]
        body_path = stack.files.root / f"{name}.form"
        body_path.write_bytes(body)
        services[name] = Service(name, child, port, metrics_port, str(body_path))
    return services


def _exchange_argv(stack: BrokerStack, service: Service, duration: float, warmup: float) -> list[str]:
    files = stack.files
    return [sys.executable, "-m", "bench.loadgen", "--tcp", f"127.0.0.1:{service.port}",
            "--tls-ca", str(files.bundle), "--tls-cert", str(files.client_cert), "--tls-key", str(files.client_key),
            "--method", "POST", "--path", "/token", "--body-file", service.body_file,
            "--content-type", "application/x-www-form-urlencoded", "--concurrency", str(CONCURRENCY),
            "--duration", str(duration), "--warmup", str(warmup)]  # fmt: skip


def _measure(
    argv: list[str], child: Child, log: Path, metrics_port: int | None, generator_cpus: set[int] | None
) -> dict[str, Any]:
    log_before = log.stat().st_size
    if metrics_port is None:
        run = run_json(argv, cpus=generator_cpus, watch=child)
    else:
        scraper = Scraper(f"http://127.0.0.1:{metrics_port}/metrics")
        with scraper.active():
            run = run_json(argv, cpus=generator_cpus, watch=child)
        run["scrapes"] = scraper.scrapes
        run["scrape_failures"] = scraper.failures
        run["scrape_bytes"] = scraper.bytes // max(1, scraper.scrapes)
    total = int(run["requests"]) + int(run.get("warmup_requests", 0))
    run["log_bytes_per_request"] = round((log.stat().st_size - log_before) / total, 1) if total else None
    return run


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [float(run[key]) for run in runs if run.get(key) is not None]
    return round(statistics.median(values), 1) if values else None


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for run in runs:
        for code, count in run["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
    summary: dict[str, Any] = {
        key: _median(runs, key)
        for key in ("rps", "p50_us", "p99_us", "server_cpu_us_per_request", "generator_cpu_us_per_request",
                    "log_bytes_per_request")
    }  # fmt: skip
    summary["errors"] = sum(int(run["errors"]) for run in runs)
    summary["statuses"] = statuses
    summary["rounds_rps"] = [run["rps"] for run in runs]
    summary["rounds_server_cpu_us"] = [run.get("server_cpu_us_per_request") for run in runs]
    if any("scrapes" in run for run in runs):
        summary["scrapes"] = sum(int(run.get("scrapes", 0)) for run in runs)
        summary["scrape_failures"] = sum(int(run.get("scrape_failures", 0)) for run in runs)
        summary["scrape_bytes"] = max(int(run.get("scrape_bytes", 0)) for run in runs)
    return summary


def _compare(runs: dict[str, list[dict[str, Any]]], baseline: str) -> dict[str, Any]:
    """Each side's summary, and its ratios against ``baseline``: of the medians, and the median of per-round ones."""
    found: dict[str, Any] = {name: _summary(side) for name, side in runs.items()}
    base = found[baseline]
    for name, side in found.items():
        if name == baseline:
            continue
        paired = [s["rps"] / b["rps"] for b, s in zip(runs[baseline], runs[name], strict=True)]
        side["vs_" + baseline] = {
            "rps_ratio": round(side["rps"] / base["rps"], 3),
            "rps_ratio_paired_median": round(statistics.median(paired), 3),
            "p50_ratio": round(side["p50_us"] / base["p50_us"], 3),
            "server_cpu_ratio": round(side["server_cpu_us_per_request"] / base["server_cpu_us_per_request"], 3),
            "server_cpu_us_delta": round(side["server_cpu_us_per_request"] - base["server_cpu_us_per_request"], 1),
        }
    return found


def _layout() -> tuple[set[int] | None, set[int] | None]:
    cpus = sorted(os.sched_getaffinity(0))
    return ({cpus[0]}, {cpus[-1]}) if len(cpus) >= 2 else (None, None)


def run_exchanges(
    stack: BrokerStack, *, rounds: int, duration: float, warmup: float, names: list[str]
) -> dict[str, Any]:
    services = _start_services(stack, names)
    server_cpus, generator_cpus = _layout()
    for service in services.values():
        pin(service.child.pid, server_cpus)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for index in range(rounds):
        # rotate the order each round so no configuration always runs first (or right after the same one)
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            service = services[name]
            argv = _exchange_argv(stack, service, duration, warmup)
            runs[name].append(_measure(argv, service.child, service.child.log, service.metrics_port, generator_cpus))
    return {"concurrency": CONCURRENCY, "by_config": _compare(runs, "off")}


def _start_sidecar(stack: BrokerStack, name: str, token_service: str, env: dict[str, str]) -> tuple[Child, Path]:
    socket = stack.files.root / f"{name}.sock"
    argv = [*BROKER_CLI, "sidecar", "--socket", str(socket), "--token-service", token_service,
            "--workload-api", f"unix://{stack.files.api_socket}"]  # fmt: skip
    child = stack._spawn(name, argv, env=env)

    def ready() -> bool:
        return socket.exists() and fetch_unix(socket, "/readyz")[0] == 200

    wait_until(ready, timeout=START_TIMEOUT, what=f"{name}'s /readyz", child=child)
    status, body, _ = fetch_unix(socket, TOKEN_PATH)
    if status != 200:
        raise RuntimeError(f"{name} answered {status} to the first token request: {body[:200]!r}")
    return child, socket


def run_sidecars(stack: BrokerStack, *, rounds: int, duration: float, warmup: float) -> dict[str, Any]:
    stack.start_workload_api()
    _server, port = stack.start_named_server("sidecar-token-service", env=METRICS_OFF)
    token_service = f"https://127.0.0.1:{port}"
    metrics_port = free_port()
    sides = {
        "off": (*_start_sidecar(stack, "sidecar-off", token_service, METRICS_OFF), None),
        "metrics": (
            *_start_sidecar(stack, "sidecar-on", token_service, {"SPIFFE_BROKER_METRICS__PORT": str(metrics_port)}),
            metrics_port,
        ),
    }
    server_cpus, generator_cpus = _layout()
    for child, _socket, _port in sides.values():
        pin(child.pid, server_cpus)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for index in range(rounds):
        order = list(sides) if index % 2 == 0 else list(reversed(sides))
        for name in order:
            child, socket, scraped = sides[name]
            argv = loadgen_argv(str(socket), concurrency=SIDECAR_CONCURRENCY, duration=duration, warmup=warmup,
                                client="raw")  # fmt: skip
            runs[name].append(_measure(argv, child, child.log, scraped, generator_cpus))
    return {"concurrency": SIDECAR_CONCURRENCY, "by_config": _compare(runs, "off")}


def run_observability_bench(
    *, rounds: int, duration: float, warmup: float, sidecar_duration: float, names: list[str], keep: bool
) -> dict[str, Any]:
    results: dict[str, Any] = {"rounds": rounds, "duration": duration, "warmup": warmup}
    with BrokerStack.create(keep=keep) as stack:
        meter = MachineLoad(children=lambda: list(stack.children.values()))
        meter.start()
        results["exchange"] = run_exchanges(stack, rounds=rounds, duration=duration, warmup=warmup, names=names)
        results["exchange"]["machine_load"] = meter.stop()
        if sidecar_duration > 0:
            meter.start()
            results["sidecar"] = run_sidecars(stack, rounds=rounds, duration=sidecar_duration, warmup=warmup)
            results["sidecar"]["machine_load"] = meter.stop()
        if keep:
            results["run_dir"] = str(stack.files.root)
    return results


def _print_table(results: dict[str, Any]) -> None:
    for part in ("exchange", "sidecar"):
        if part not in results:
            continue
        print(f"\n{part} (c={results[part]['concurrency']}), foreign cores {results[part]['machine_load']}")
        for name, side in results[part]["by_config"].items():
            ratio = side.get("vs_off", {})
            print(f"  {name:13} {side['rps']:>9,.0f}/s p50 {side['p50_us']:>7,.0f} us p99 {side['p99_us']:>7,.0f} us "
                  f"cpu {side['server_cpu_us_per_request']:>6.1f} us/req log {side['log_bytes_per_request']} B/req "
                  f"err {side['errors']} {ratio}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.observability_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per token-exchange measurement")
    parser.add_argument("--sidecar-duration", type=float, default=2.0, help="seconds per sidecar measurement (0: skip)")
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--only", default=",".join(CONFIGS), help="token service configurations, 'off' is added")
    parser.add_argument("--wait-quiet", type=float, default=20.0)
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "results-k.json")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    names = ["off", *(n for n in args.only.split(",") if n and n != "off")]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configurations: {sorted(unknown)}")
    started = time.monotonic()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "quiet_wait": wait_for_quiet(limit=args.wait_quiet) if args.wait_quiet > 0 else None,
    }
    results.update(
        run_observability_bench(rounds=args.rounds, duration=args.duration, warmup=args.warmup,
                                sidecar_duration=args.sidecar_duration, names=names, keep=args.keep)
    )  # fmt: skip
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["wall_s"] = round(time.monotonic() - started, 1)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    _print_table(results)
    print(f"wall time {results['wall_s']} s; results written to {args.output}")


if __name__ == "__main__":
    main()
