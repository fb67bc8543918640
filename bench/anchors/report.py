"""The printed table: per scenario, each side's medians, then the anchor/broker ratios (CPU per request, rate)."""

from __future__ import annotations

from typing import Any

__all__ = ["render"]

HEADER = ["scenario", "server", "req/s", "p50 us", "p99 us", "server CPU us/req", "generator CPU us/req", "errors",
          "TLS resumed"]  # fmt: skip


def _side(name: str, side: dict[str, Any]) -> list[str]:
    resumed = f"{side['tls_resumed']}/{side['tls_connections']}" if side.get("tls_connections") else "-"
    return [name, f"{side['rps']:,.0f}", f"{side['p50_us']:,.0f}", f"{side['p99_us']:,.0f}",
            f"{side['server_cpu_us_per_request']:,.1f}", f"{side['generator_cpu_us_per_request']:,.1f}",
            str(side["errors"]), resumed]  # fmt: skip


def _rows(scenarios: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, found in scenarios.items():
        rows.append([name, *_side(found["anchor_name"], found["anchor"])])
        rows.append(["", *_side(found["broker_name"], found["broker"])])
        ratios = (f"CPU/req {found['anchor_name']}/{found['broker_name']} = {found['cpu_ratio']} "
                  f"(paired {found['cpu_ratio_paired']}); req/s ratio {found['rps_ratio']} "
                  f"(paired {found['rps_ratio_paired']})")  # fmt: skip
        rows.append(["", ratios, *[""] * (len(HEADER) - 2)])
    return rows


def render(results: dict[str, Any]) -> str:
    """A plain-text table of ``results["scenarios"]`` (ratio lines span the row)."""
    rows = _rows(results.get("scenarios", {}))
    widths = [max(len(HEADER[i]), *(len(r[i]) for r in rows if r[2])) if rows else len(HEADER[i])
              for i in range(len(HEADER))]  # fmt: skip
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True))]
    for row in rows:
        if not row[2]:
            lines.append(" " * (widths[0] + 2) + row[1])
            continue
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    return "\n".join(lines)
