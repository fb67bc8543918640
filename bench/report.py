"""The machine description and the results table (subject next to its reference, ratio against the target)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["TARGETS", "machine_info", "notes", "render_table", "table_rows"]

PACKAGES = ("aiohttp", "cryptography", "grpcio", "joserfc", "spiffe", "yarl", "multidict")
TARGETS = {
    "a_ratio": 0.70,  # sidecar req/s >= 70% of the bare aiohttp handler's
    "b_exchanges_per_s": 2500.0,  # token exchanges per second per server process
    "c_ratio": 0.60,  # verifier checks/s >= 60% of raw ES256 verifies/s
    "d_rss_mib": 80.0,  # sidecar VmRSS after 10,000 requests
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
