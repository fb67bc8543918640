"""The machine description and the results table (subject next to its reference, ratio against the target)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

from bench.egress_bench import egress_rows
from bench.feed_bench import feed_rows

__all__ = ["TARGETS", "machine_info", "notes", "render_table", "table_rows"]

PACKAGES = ("aiohttp", "cryptography", "grpcio", "joserfc", "spiffe", "yarl", "multidict")
TARGETS = {
    "a_ratio": 0.70,  # sidecar req/s >= 70% of the bare aiohttp handler's
    "b_exchanges_per_s": 2500.0,  # token exchanges per second per server process
    "c_ratio": 0.60,  # verifier checks/s >= 60% of raw ES256 verifies/s
    "d_rss_mib": 80.0,  # sidecar VmRSS after 10,000 requests
    "e_ratio": 0.85,  # exchanges/s with the ledger and audit trail on >= 85% of the same build with them off
    "f_cpu_ratio": 1.10,  # server CPU per exchange per replica, 2 replicas <= 110% of 1 replica
}


def machine_info() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "-"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "packages": versions,
    }


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _errors(side: dict[str, Any]) -> str:
    return f" **{side['errors']} errors**" if side.get("errors") else ""


def _latency(side: dict[str, Any]) -> str:
    return (
        f"{side['rps']:,.0f}/s (p50 {side['p50_us']:,.0f} us, p99 {side['p99_us']:,.0f} us); "
        f"server CPU {side['server_cpu_us_per_request']:,.1f} us/req{_errors(side)}"
    )


def _sidecar_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for concurrency, found in results["by_concurrency"].items():
        ratio = found["ratio"]
        rows.append([
            f"(a) cached token, c={concurrency}", _latency(found["sidecar"]), _latency(found["reference"]),
            f"{ratio:.0%}", f">= {TARGETS['a_ratio']:.0%} ({_verdict(ratio >= TARGETS['a_ratio'])})",
        ])  # fmt: skip
    return rows


def _exchange_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    reference = results["reference_verify_plus_sign_per_s"]
    target = TARGETS["b_exchanges_per_s"]
    for layout, by_grant in results["layouts"].items():
        for grant in ("token_exchange", "client_credentials"):
            found = by_grant.get(grant)
            if found is None:
                continue
            subject = (
                f"{found['rps']:,.0f}/s (p50 {found['p50_us'] / 1000:,.1f} ms); server CPU "
                f"{found['server_cpu_us_per_request']:,.0f} us/req = {found['per_server_core_s']:,.0f}/core-s"
                f"{_errors(found)}"
            )
            bare = by_grant["bare_aiohttp"]
            ref = (
                f"verify+sign {reference:,.0f}/s; bare aiohttp+mTLS+verify+sign {bare['rps']:,.0f}/s "
                f"({bare['per_server_core_s']:,.0f}/core-s)"
            )
            rows.append([
                f"(b) {grant}, {layout} CPUs", subject, ref, f"{found['rps'] / reference:.0%} of crypto",
                f">= {target:,.0f}/s ({_verdict(found['rps'] >= target)})",
            ])  # fmt: skip
    return rows


def _verifier_row(results: dict[str, Any]) -> list[str]:
    verifier, raw = results["verifier_per_s"], results["raw_verify_per_s"]
    ratio = verifier / raw
    return [
        "(c) verifier checks",
        f"{verifier:,.0f}/s",
        f"raw ES256 verify {raw:,.0f}/s",
        f"{ratio:.0%} (paired {results['paired_ratio_median']:.0%})",
        f">= {TARGETS['c_ratio']:.0%} ({_verdict(ratio >= TARGETS['c_ratio'])})",
    ]


def _memory_row(memory: dict[str, Any]) -> list[str]:
    after, limit = memory["after_10k"]["rss_mib"], TARGETS["d_rss_mib"]
    reference = memory.get("reference_end", {}).get("rss_mib")
    return [
        "(d) sidecar RSS after 10k req",
        f"{after:.1f} MiB (start {memory['after_start']['rss_mib']:.1f}, peak {memory['after_10k']['hwm_mib']:.1f})",
        f"bare aiohttp {reference:.1f} MiB" if reference else "-",
        f"{after / limit:.0%} of limit",
        f"<= {limit:.0f} MiB ({_verdict(after <= limit)})",
    ]


def _store_side(found: dict[str, Any]) -> str:
    postgres = found.get("postgres_cpu_us_per_request") or 0.0
    extra = f" + postgres {postgres:,.0f} us" if postgres >= 1 else ""
    return (
        f"{found['rps']:,.0f}/s (p50 {found['p50_us'] / 1000:,.1f} ms); server CPU "
        f"{found['server_cpu_us_per_request']:,.0f} us/req{extra}{_errors(found)}"
    )


def _store_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    target = TARGETS["e_ratio"]
    for store in ("sqlite", "postgresql"):
        on, off = results["services"][store], results["services"][f"{store}-off"]
        ratio = on["rps_ratio_to_off"]
        rows.append([
            f"(e) {store}, ledger+audit on vs off", _store_side(on), f"off: {_store_side(off)}",
            f"{ratio:.0%} (CPU {on['server_cpu_ratio_to_off']:.0%})", f">= {target:.0%} ({_verdict(ratio >= target)})",
        ])  # fmt: skip
    return rows


def _replica_row(results: dict[str, Any]) -> list[str]:
    one, two = results["one_replica"], results["two_replicas"]
    ratio, limit = results["server_cpu_ratio_two_to_one"], TARGETS["f_cpu_ratio"]
    per_replica = ", ".join(f"{found['server_cpu_us_per_request']:,.0f}" for found in two["per_replica"].values())
    return [
        "(f) 2 replicas vs 1, PostgreSQL",
        f"{two['combined_rps']:,.0f}/s combined; server CPU {per_replica} us/req per replica "
        f"+ postgres {two['postgres_cpu_us_per_request']:,.0f} us",
        f"1 replica {one['rps']:,.0f}/s; server CPU {one['server_cpu_us_per_request']:,.0f} us/req "
        f"+ postgres {one['postgres_cpu_us_per_request']:,.0f} us",
        f"CPU {ratio:.0%}, rate {results['rps_ratio_two_to_one']:.0%}",
        f"CPU <= {limit:.0%} ({_verdict(ratio <= limit)})",
    ]


def _assertion_side(found: dict[str, Any], store: str) -> str:
    """Like (e)'s, PostgreSQL's CPU shown for the PostgreSQL store only (the idle cluster's is in the JSON)."""
    shown = found if store == "postgresql" else {**found, "postgres_cpu_us_per_request": None}
    return f"{_store_side(shown)}; generator CPU {found['generator_cpu_us_per_request']:,.0f} us/req"


def _assertion_rows(results: dict[str, Any]) -> list[list[str]]:
    """(h): private_key_jwt + replay cache against mTLS client_credentials, same server; no target in issue 11."""
    rows = []
    for store in ("postgresql", "sqlite"):
        jwt, mtls = results["sides"][f"{store}/private_key_jwt"], results["sides"][f"{store}/mtls"]
        rows.append([
            f"(h) private_key_jwt + replay cache, {store}", _assertion_side(jwt, store),
            f"mTLS: {_assertion_side(mtls, store)}",
            f"{jwt['rps_ratio_to_mtls']:.0%} (paired {jwt['paired_rps_ratio']:.0%}; CPU "
            f"{jwt['server_cpu_ratio_to_mtls']:.0%})", "side by side",
        ])  # fmt: skip
    return rows


def _dpop_row(results: dict[str, Any]) -> list[str]:
    return [
        "(i) DPoP proof checks",
        f"{results['check_proof_per_s']:,.0f}/s; + replay cache {results['check_proof_and_replay_per_s']:,.0f}/s",
        f"raw ES256 verify {results['raw_es256_verify_per_s']:,.0f}/s",
        f"{results['check_ratio']:.0%} ({results['check_and_replay_ratio']:.0%} with the replay cache)",
        "side by side",
    ]


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    if "sidecar" in results:
        rows += _sidecar_rows(results["sidecar"])
    if "exchange" in results:
        rows += _exchange_rows(results["exchange"])
    if "verifier" in results:
        rows.append(_verifier_row(results["verifier"]))
    if "sidecar" in results and "memory" in results["sidecar"]:
        rows.append(_memory_row(results["sidecar"]["memory"]))
    if "store" in results:
        rows += _store_rows(results["store"])
    if "replicas" in results:
        rows.append(_replica_row(results["replicas"]))
    if "feed" in results:
        rows += feed_rows(results["feed"])
    if "assertions" in results:
        rows += _assertion_rows(results["assertions"])
    if "dpop" in results:
        rows.append(_dpop_row(results["dpop"]))
    if "egress" in results:
        rows += egress_rows(results["egress"])
    return rows


def notes(results: dict[str, Any]) -> list[str]:
    """Diagnostics printed under the table: the exchange cost breakdown."""
    exchange = results.get("exchange", {})
    lines = []
    if "breakdown_us" in exchange:
        steps = ", ".join(f"{name} {value:g}" for name, value in exchange["breakdown_us"].items())
        lines.append(f"(b) per-step cost in process, us: {steps}")
    return lines


def render_table(rows: list[list[str]]) -> str:
    """A Markdown table (also readable in a terminal)."""
    header = ["benchmark", "measured", "reference (same run)", "ratio", "target"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
