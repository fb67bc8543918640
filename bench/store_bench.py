"""(e) the cost of the issuance ledger and audit trail per exchange; (f) two replicas against one on PostgreSQL.

Issue 9, "Benchmarks". Same load as (b)'s token exchange: ``bench.loadgen`` over keep-alive mutual-TLS
connections POSTing RFC 8693 token exchanges; every token service is ``spiffe-broker server`` started by its CLI.

* (e) Four token services, started once and measured in alternated rounds: the SQLite store and the PostgreSQL
  store, each with the ledger and the audit trail on (the default) and off (``[ledger] record_tokens = false``,
  the same build: the baseline). Layout: the server and PostgreSQL on the first CPU, the generator on the second,
  so whatever the database costs comes out of the server's core and shows in the throughput.
* (f) Two replicas on one PostgreSQL database (ledger and audit on), CPUs shared: one replica with all the
  connections, alternated with both replicas, each with half of them from its own generator process.

PostgreSQL is a private cluster (``tests.postgres.PostgresCluster``: ``initdb`` in /tmp, a Unix socket only,
``fsync=off`` as in the tests). Its processes' CPU is measured apart (the cluster's process tree, from
``/proc``), since it is a real cost of the PostgreSQL store that the server's own CPU does not show.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import statistics
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.exchange_bench import exchange_bodies
from bench.procs import Child, cpu_count, pin, run_json
from bench.stack import BrokerStack
from tests.postgres import INSTALL_HINT, PostgresCluster, find_bin_dir

__all__ = ["ISSUER", "Load", "Postgres", "run_replica_bench", "run_store_bench", "split_layout", "summarize_runs"]

ISSUER = "https://tokens.bench.example"
RECORDING_OFF = {"SPIFFE_BROKER_LEDGER__RECORD_TOKENS": "false"}
CONCURRENCY = 16


def _process_table() -> dict[int, list[str]]:
    """``/proc/<pid>/stat`` fields after the command name, for every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                table[int(entry)] = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
    return table


def _tree(root: int) -> dict[int, list[str]]:
    """``root`` and its descendants (postgres backends call setsid(), so their session does not identify them)."""
    table = _process_table()
    found = {root: table[root]} if root in table else {}
    added = True
    while added:
        added = False
        for pid, fields in table.items():
            if pid not in found and int(fields[1]) in found:
                found[pid] = fields
                added = True
    return found


def _tree_cpu_seconds(root: int) -> float:
    """User+system CPU of ``root`` and its descendants, with their reaped children's."""
    ticks = sum(sum(int(value) for value in fields[11:15]) for fields in _tree(root).values())
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Postgres:
    """The benchmark's PostgreSQL cluster: databases, store URLs, the CPU of its processes, pinning."""

    cluster: PostgresCluster

    @classmethod
    def start(cls) -> Postgres:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError(f"(e) and (f) need PostgreSQL: {INSTALL_HINT}")
        cluster = PostgresCluster(bin_dir)
        cluster.start()
        return cls(cluster)

    @property
    def _root(self) -> int:
        process = self.cluster._process
        if process is None:
            raise RuntimeError("the benchmark's PostgreSQL is not running")
        return process.pid

    def new_store(self) -> tuple[str, str]:
        """A new database: its name and the store URL."""
        name = self.cluster.create_database()
        return name, self.cluster.url(name)

    def cpu_seconds(self) -> float:
        return _tree_cpu_seconds(self._root)

    def pin(self, cpus: set[int] | None) -> None:
        """Pin every postgres process (new backends inherit the postmaster's affinity)."""
        for pid in _tree(self._root):
            pin(pid, cpus)

    def ledger_rows(self, dbname: str) -> int:
        with psycopg.connect(self.cluster.conninfo(dbname)) as conn:
            row = conn.execute("SELECT count(*) FROM issued_tokens").fetchone()
        return int(row[0]) if row else 0

    def stop(self) -> None:
        self.cluster.stop()


@dataclass(frozen=True)
class Service:
    """One token service under test."""

    name: str
    child: Child
    port: int
    ledger_rows: Callable[[], int]


def _sqlite_rows(stack: BrokerStack, name: str) -> Callable[[], int]:
    def count() -> int:
        with sqlite3.connect(stack.files.root / name / "broker.db") as conn:
            return int(conn.execute("SELECT count(*) FROM issued_tokens").fetchone()[0])

    return count


def _body_file(stack: BrokerStack) -> str:
    path = stack.files.root / "store-exchange.form"
    path.write_bytes(exchange_bodies(stack.jwt_svid(issuer=ISSUER))["token_exchange"])
    return str(path)


def _loadgen(
    stack: BrokerStack, port: int, body_file: str, concurrency: int, duration: float, warmup: float
) -> list[str]:
    files = stack.files
    return [sys.executable, "-m", "bench.loadgen", "--tcp", f"127.0.0.1:{port}",
            "--tls-ca", str(files.bundle), "--tls-cert", str(files.client_cert), "--tls-key", str(files.client_key),
            "--method", "POST", "--path", "/token", "--body-file", body_file, "--content-type",
            "application/x-www-form-urlencoded", "--concurrency", str(concurrency), "--duration", str(duration),
            "--warmup", str(warmup)]  # fmt: skip


@dataclass(frozen=True)
class Load:
    """How hard and how long each measurement runs."""

    rounds: int
    duration: float
    warmup: float


def _measure_all(
    stack: BrokerStack,
    targets: list[tuple[Service, int]],
    body_file: str,
    load: Load,
    postgres: Postgres,
    generator_cpus: set[int] | None,
) -> list[dict[str, Any]]:
    """Load every (service, connections) at once, each from its own generator; add postgres CPU per exchange."""

    def one(target: tuple[Service, int]) -> dict[str, Any]:
        service, concurrency = target
        argv = _loadgen(stack, service.port, body_file, concurrency, load.duration, load.warmup)
        return run_json(argv, cpus=generator_cpus, watch=service.child)

    pg_before = postgres.cpu_seconds()
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        runs = list(pool.map(one, targets))
    pg_used = postgres.cpu_seconds() - pg_before
    exchanges = sum(int(run["requests"]) + int(run.get("warmup_requests", 0)) for run in runs)
    for run in runs:
        run["postgres_cpu_us_per_request"] = round(pg_used / exchanges * 1e6, 1) if exchanges else None
    return runs


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(float(run[key]) for run in runs), 1)


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for run in runs:
        for code, count in run["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
    return {
        "rps": _median(runs, "rps"),
        "p50_us": _median(runs, "p50_us"),
        "p99_us": _median(runs, "p99_us"),
        "server_cpu_us_per_request": _median(runs, "server_cpu_us_per_request"),
        "postgres_cpu_us_per_request": _median(runs, "postgres_cpu_us_per_request"),
        "errors": sum(int(run["errors"]) for run in runs),
        "statuses": statuses,
        "rounds_rps": [run["rps"] for run in runs],
        "rounds_server_cpu_us": [run["server_cpu_us_per_request"] for run in runs],
    }


def split_layout() -> tuple[set[int] | None, set[int] | None]:
    """(server and postgres CPUs, generator CPUs): split over the first two CPUs when there are two."""
    if cpu_count() < 2:
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    return {cpus[0]}, {cpus[1]}


def _start_store_services(stack: BrokerStack, postgres: Postgres) -> list[Service]:
    services = []
    for name, env in (("sqlite", None), ("sqlite-off", RECORDING_OFF)):
        child, port = stack.start_named_server(name, issuer=ISSUER, env=env)
        services.append(Service(name, child, port, _sqlite_rows(stack, name)))
    for name, env in (("postgresql", None), ("postgresql-off", RECORDING_OFF)):
        dbname, url = postgres.new_store()
        child, port = stack.start_named_server(name, issuer=ISSUER, store_url=url, env=env)
        services.append(Service(name, child, port, functools.partial(postgres.ledger_rows, dbname)))
    return services


def run_store_bench(stack: BrokerStack, postgres: Postgres, load: Load) -> dict[str, Any]:
    """(e): each store with the ledger and audit trail on and off; alternated rounds, medians, ratios."""
    services = _start_store_services(stack, postgres)
    server_cpus, generator_cpus = split_layout()
    for service in services:
        pin(service.child.pid, server_cpus)
    postgres.pin(server_cpus)
    body_file = _body_file(stack)
    runs: dict[str, list[dict[str, Any]]] = {service.name: [] for service in services}
    for _ in range(load.rounds):
        for service in services:
            runs[service.name] += _measure_all(
                stack, [(service, CONCURRENCY)], body_file, load, postgres, generator_cpus
            )
    results: dict[str, Any] = {"concurrency": CONCURRENCY, "layout": "server+postgres CPU 0, generator CPU 1"}
    results["services"] = {name: summarize_runs(found) for name, found in runs.items()}
    for service in services:
        results["services"][service.name]["ledger_rows"] = service.ledger_rows()
        service.child.stop()
    for store in ("sqlite", "postgresql"):
        on, off = results["services"][store], results["services"][f"{store}-off"]
        on["rps_ratio_to_off"] = round(on["rps"] / off["rps"], 3)
        on["server_cpu_ratio_to_off"] = round(on["server_cpu_us_per_request"] / off["server_cpu_us_per_request"], 3)
    postgres.pin(None)
    return results


def run_replica_bench(stack: BrokerStack, postgres: Postgres, load: Load) -> dict[str, Any]:
    """(f): one replica with all connections, alternated with two replicas sharing them; CPUs shared."""
    _dbname, url = postgres.new_store()
    replicas = []
    for name in ("replica-1", "replica-2"):
        child, port = stack.start_named_server(name, issuer=ISSUER, store_url=url)
        replicas.append(Service(name, child, port, lambda: 0))
    body_file = _body_file(stack)
    single: list[dict[str, Any]] = []
    pairs: list[list[dict[str, Any]]] = []
    half = CONCURRENCY // 2
    for _ in range(load.rounds):
        single += _measure_all(stack, [(replicas[0], CONCURRENCY)], body_file, load, postgres, None)
        pairs.append(_measure_all(stack, [(replica, half) for replica in replicas], body_file, load, postgres, None))
    for replica in replicas:
        replica.child.stop()
    combined = [{**pair[0], "rps": sum(run["rps"] for run in pair)} for pair in pairs]
    per_replica = {replica.name: summarize_runs([pair[i] for pair in pairs]) for i, replica in enumerate(replicas)}
    two: dict[str, Any] = {
        "combined_rps": _median(combined, "rps"),
        "rounds_combined_rps": [run["rps"] for run in combined],
        "per_replica": per_replica,
        "postgres_cpu_us_per_request": _median(combined, "postgres_cpu_us_per_request"),
    }
    one = summarize_runs(single)
    per_replica_cpu = statistics.mean(r["server_cpu_us_per_request"] for r in per_replica.values())
    return {
        "concurrency": CONCURRENCY,
        "layout": "CPUs shared",
        "one_replica": one,
        "two_replicas": two,
        "two_replica_server_cpu_us_per_request": round(per_replica_cpu, 1),
        "server_cpu_ratio_two_to_one": round(per_replica_cpu / one["server_cpu_us_per_request"], 3),
        "rps_ratio_two_to_one": round(two["combined_rps"] / one["rps"], 3),
    }
