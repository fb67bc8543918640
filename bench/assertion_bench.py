"""(h) exchanges/s with ``private_key_jwt`` and the replay cache, against mTLS ``client_credentials`` (issue 11).

Two token services (``spiffe-broker server``, started by their CLI, the same settings: ``[assertions] enabled`` and
``allow_bearer_tokens``), one on a PostgreSQL store and one on SQLite, each with the client ``bench-batch``
registered before it starts (``spiffe-broker store migrate`` and ``clients add``: an ES256 key, acting as the
workload's SPIFFE ID, so the same policy rule applies to both methods). Both methods ask for the same token
(``client_credentials``, same audience and scope) from the same server:

* ``mtls``: keep-alive mutual TLS with the workload's X.509-SVID, the certificate the only credential (as (b));
* ``private_key_jwt``: keep-alive TLS without a client certificate; every request carries a fresh ES256 client
  assertion signed by the generator (``bench.loadgen --assertion-key``), so every request costs the server one
  more ES256 verify and one replay-cache insert (PostgreSQL: an ``INSERT ... ON CONFLICT`` round trip; SQLite: a
  write on its worker thread).

Layout as (e): the server and PostgreSQL pinned to the first CPU, the generator to the second. Alternated rounds:
each round measures PostgreSQL mTLS, PostgreSQL ``private_key_jwt``, SQLite mTLS, SQLite ``private_key_jwt``.
Every answer must be 200: a 401 means a replayed or refused assertion, and fails the run.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.procs import BROKER_CLI, Child, pin, run_json
from bench.stack import AUDIENCE, SCOPE, WORKLOAD_ID, BrokerStack
from bench.store_bench import ISSUER, Load, Postgres, split_layout, summarize_runs
from broker._files import write_private_file
from broker.jose.jwk import public_jwk

__all__ = ["run_assertion_bench"]

CLIENT_ID = "bench-batch"
KID = "bench-batch-1"
CONCURRENCY = 16
ASSERTIONS = {"SPIFFE_BROKER_ASSERTIONS__ENABLED": "true", "SPIFFE_BROKER_ASSERTIONS__ALLOW_BEARER_TOKENS": "true"}
METHODS = ("mtls", "private_key_jwt")
FORM = "application/x-www-form-urlencoded"
BODY = urlencode({"grant_type": "client_credentials", "audience": AUDIENCE, "scope": SCOPE}).encode()


@dataclass(frozen=True)
class AssertionKey:
    """The registered client's key: the PEM file the generator signs with, the JWK Set the store holds."""

    pem: Path
    jwks: Path

    @classmethod
    def create(cls, root: Path) -> AssertionKey:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = root / "client-assertion.key"
        write_private_file(
            pem,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        jwks = root / "client.jwks"
        jwks.write_text(json.dumps({"keys": [{**public_jwk(key.public_key()), "kid": KID, "alg": "ES256"}]}))
        return cls(pem, jwks)


def register_client(store_url: str, key: AssertionKey) -> None:
    """Migrate the store and register :data:`CLIENT_ID` as the workload, before any server starts on it."""
    for args in (
        ["store", "migrate", "--store", store_url],
        ["clients", "add", "--store", store_url, "--client-id", CLIENT_ID, "--spiffe-id", str(WORKLOAD_ID),
         "--jwks-file", str(key.jwks)],
    ):  # fmt: skip
        done = subprocess.run([*BROKER_CLI, *args], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"spiffe-broker {' '.join(args[:2])} failed: {done.stdout}{done.stderr}")


@dataclass(frozen=True)
class Service:
    """One token service under test."""

    name: str
    child: Child
    port: int
    replay_rows: Callable[[], int]


REPLAY_ROWS = "SELECT count(*) FROM replay_cache"


def _sqlite_replay_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(REPLAY_ROWS).fetchone()[0])


def _postgres_replay_rows(postgres: Postgres, dbname: str) -> int:
    with psycopg.connect(postgres.cluster.conninfo(dbname)) as conn:
        row = conn.execute(REPLAY_ROWS).fetchone()
    return int(row[0]) if row else 0


def _start(stack: BrokerStack, postgres: Postgres, key: AssertionKey) -> list[Service]:
    """The PostgreSQL and the SQLite token service, each with the client registered in its store first.

    ``replay_rows`` counts the replay cache's rows (live and not yet pruned: the housekeeper removes expired ones)."""
    dbname, postgres_url = postgres.new_store()
    sqlite_dir = stack.files.root / "sqlite-assertions"
    sqlite_dir.mkdir(mode=0o700)
    sqlite_db = sqlite_dir / "broker.db"
    stores = (
        ("postgresql", postgres_url, functools.partial(_postgres_replay_rows, postgres, dbname)),
        ("sqlite", f"sqlite://{sqlite_db}", functools.partial(_sqlite_replay_rows, sqlite_db)),
    )
    services = []
    for name, url, replay_rows in stores:
        register_client(url, key)
        child, port = stack.start_named_server(name, issuer=ISSUER, store_url=url, env=ASSERTIONS)
        services.append(Service(name, child, port, replay_rows))
    return services


def _loadgen(stack: BrokerStack, service: Service, method: str, body_file: Path, key: AssertionKey,
             load: Load) -> list[str]:  # fmt: skip
    files = stack.files
    argv = [sys.executable, "-m", "bench.loadgen", "--tcp", f"127.0.0.1:{service.port}",
            "--tls-ca", str(files.bundle), "--method", "POST", "--path", "/token",
            "--body-file", str(body_file), "--content-type", FORM, "--concurrency", str(CONCURRENCY),
            "--duration", str(load.duration), "--warmup", str(load.warmup)]  # fmt: skip
    if method == "mtls":
        return [*argv, "--tls-cert", str(files.client_cert), "--tls-key", str(files.client_key)]
    return [*argv, "--assertion-key", str(key.pem), "--assertion-kid", KID, "--client-id", CLIENT_ID,
            "--audience-claim", ISSUER]  # fmt: skip


def _all_ok(run: dict[str, Any], service: Service, method: str) -> None:
    """Every answer 200, warm-up included; anything else (401: a replayed or refused assertion) fails the run."""
    statuses = {**run.get("warmup_statuses", {})}
    for code, count in run["statuses"].items():
        statuses[code] = statuses.get(code, 0) + count
    if run["errors"] or run.get("warmup_errors") or set(statuses) != {"200"}:
        tail = service.child.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"(h) {service.name} {method}: not all 200: {statuses}, errors {run['errors']}\n{tail}")


def _measure(
    stack: BrokerStack, service: Service, method: str, body_file: Path, key: AssertionKey, load: Load,
    postgres: Postgres, generator_cpus: set[int] | None,
) -> dict[str, Any]:  # fmt: skip
    pg_before = postgres.cpu_seconds()
    run = run_json(_loadgen(stack, service, method, body_file, key, load), cpus=generator_cpus, watch=service.child)
    pg_used = postgres.cpu_seconds() - pg_before
    _all_ok(run, service, method)
    exchanges = int(run["requests"]) + int(run.get("warmup_requests", 0))
    run["postgres_cpu_us_per_request"] = round(pg_used / exchanges * 1e6, 1) if exchanges else None
    return run


def _with_generator(summary: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    cpu = statistics.median(float(run["generator_cpu_us_per_request"]) for run in runs)
    summary["generator_cpu_us_per_request"] = round(cpu, 1)
    return summary


def run_assertion_bench(stack: BrokerStack, postgres: Postgres, load: Load) -> dict[str, Any]:
    """(h): per store, mTLS against private_key_jwt on the same server; alternated rounds, medians, ratios."""
    key = AssertionKey.create(stack.files.root)
    body_file = stack.files.root / "client-credentials.form"
    body_file.write_bytes(BODY)
    services = _start(stack, postgres, key)
    server_cpus, generator_cpus = split_layout()
    for service in services:
        pin(service.child.pid, server_cpus)
    postgres.pin(server_cpus)
    runs: dict[str, list[dict[str, Any]]] = {f"{s.name}/{m}": [] for s in services for m in METHODS}
    try:
        for _ in range(load.rounds):
            for service in services:
                for method in METHODS:
                    found = _measure(stack, service, method, body_file, key, load, postgres, generator_cpus)
                    runs[f"{service.name}/{method}"].append(found)
        results: dict[str, Any] = {
            "concurrency": CONCURRENCY,
            "layout": "server+postgres CPU 0, generator CPU 1",
            "client_id": CLIENT_ID,
            "sides": {name: _with_generator(summarize_runs(found), found) for name, found in runs.items()},
        }
        for service in services:
            jwt, mtls = results["sides"][f"{service.name}/private_key_jwt"], results["sides"][f"{service.name}/mtls"]
            jwt["replay_cache_rows_at_end"] = service.replay_rows()
            jwt["rps_ratio_to_mtls"] = round(jwt["rps"] / mtls["rps"], 3)
            jwt["server_cpu_ratio_to_mtls"] = round(
                jwt["server_cpu_us_per_request"] / mtls["server_cpu_us_per_request"], 3
            )
            jwt["paired_rps_ratio"] = _paired(runs[f"{service.name}/private_key_jwt"], runs[f"{service.name}/mtls"])
    finally:
        for service in services:
            service.child.stop()
        postgres.pin(None)
    return results


def _paired(subject: list[dict[str, Any]], reference: list[dict[str, Any]]) -> float:
    ratios = [float(s["rps"]) / float(r["rps"]) for s, r in zip(subject, reference, strict=True)]
    return round(statistics.median(ratios), 3)
