"""``spiffe-broker status``: the running token service at a glance, from its admin API (issue 11 item 4).

Remote only (``--admin-url`` with ``--server-id`` and the caller's identity, as every admin command takes them;
see :mod:`broker.cli._state`): what it shows lives in the service, the clock drift in its memory. Three reads,
each audited there as an ``admin.call``:

* the store: engine, redacted URL, schema version against the latest the service knows (``GET /admin/v1/store``);
* the signing keys: the active kid and how many keys are in each state (``GET /admin/v1/keys``);
* **Clock drift (worst offenders)** (``GET /admin/v1/clock-drift``): per client and source (``client_assertion``,
  ``jwt_svid``, ``dpop_proof``), ``server time - iat`` over the last samples: the drift it shows
  (:func:`~broker.tokens.drift.drift_of`: the median, or the minimum for JWT-SVIDs, which a SPIRE agent reuses),
  median, min and max in seconds, negative when the client's clock runs ahead. ``!`` marks a drift beyond half
  the leeway, where the service logs its one warning per client. The drift is the answering replica's own, kept
  in memory since it started: behind a load balancer, ask each replica (the header names the one that answered).

``--json`` prints ``{"store": ..., "signing_keys": ..., "clock_drift": ...}``, each the admin API's document.
What to do about a drifting client: docs/operations.md, "A client's clock drifts".
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from broker._eventloop import run as run_event_loop
from broker.admin.client import AdminClient
from broker.admin.clock_drift import DEFAULT_LIMIT, MAX_LIMIT, ClockDrift, clock_drift_document
from broker.admin.ports import KeyInfo, StoreStatus
from broker.admin.wire import keys_document, store_status_document
from broker.apikeys.report import Report, ReportRow
from broker.cli._node_status import node_lines, read_node_status
from broker.cli._state import LocalTarget, RemoteTarget, json_option, remote_options
from broker.cli.main import cli_errors
from broker.errors import BrokerError
from broker.tokens.keystore import KeyState

__all__ = ["status"]

RUNBOOK = "docs/operations.md, 'A client's clock drifts'"
REVIEW_SOON = timedelta(days=7)
HTTP_NOT_FOUND = 404
MARK = "!"


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    store: StoreStatus
    keys: tuple[KeyInfo, ...]
    drift: ClockDrift
    due: tuple[ReportRow, ...] | None = None  # exceptions overdue or due within REVIEW_SOON; None: not served


async def read_status(admin: AdminClient, limit: int) -> ServiceStatus:
    """The four reads, side by side."""
    store, keys, drift, report = await asyncio.gather(
        admin.store_status(), admin.list_keys(), admin.clock_drift(limit), _report(admin)
    )
    if report is None:
        return ServiceStatus(store, tuple(keys), drift)
    soon = report.generated_at + REVIEW_SOON
    due = tuple(row for row in report.rows if row.review_overdue or (row.grantable and row.review_due <= soon))
    return ServiceStatus(store, tuple(keys), drift, due)


async def _report(admin: AdminClient) -> Report | None:
    """The API-key exceptions' report, or None from a token service that does not serve them."""
    try:
        return await admin.apikeys_report()
    except BrokerError as exc:
        if exc.status == HTTP_NOT_FOUND:
            return None
        raise


def status_document(found: ServiceStatus) -> dict[str, Any]:
    return {
        "store": store_status_document(found.store),
        "signing_keys": keys_document(list(found.keys)),
        "clock_drift": clock_drift_document(found.drift),
        "exceptions_due_for_review": None if found.due is None else [_due_document(row) for row in found.due],
    }


def _due_document(row: ReportRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "owner": row.owner,
        "review_due": row.review_due.isoformat(),
        "overdue": row.review_overdue,
    }


# -- text ------------------------------------------------------------------------------------------------------


def _store_line(store: StoreStatus) -> str:
    schema = f"schema {store.schema_version}"
    if store.schema_version < store.latest_version:
        schema += f", behind the latest {store.latest_version}: run spiffe-broker store migrate"
    return f"store:        {store.engine} {store.redacted_url} ({schema})"


def _keys_line(keys: tuple[KeyInfo, ...]) -> str:
    active = [key.kid for key in keys if key.state is KeyState.ACTIVE]
    counts = Counter(str(key.state) for key in keys)
    states = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
    return f"signing keys: active {', '.join(active) or 'NONE (the service cannot sign)'}; {states or 'none'}"


def _seconds(value: float) -> str:
    return f"{value:+.2f}"


def _drift_rows(drift: ClockDrift) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("CLIENT", "SOURCE", "SAMPLES", "DRIFT S", "MEDIAN S", "MIN S", "MAX S", "")]
    for report in drift.clients:
        numbers = tuple(_seconds(value) for value in (report.drift, report.median, report.minimum, report.maximum))
        mark = MARK if drift.drifting(report) else ""
        rows.append((report.client, report.source.value, str(report.samples), *numbers, mark))
    return rows


_NUMBERS = frozenset({2, 3, 4, 5, 6})  # columns aligned on their last digit


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: tuple[str, ...]) -> str:
        cells = (c.rjust(w) if i in _NUMBERS else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        return "  ".join(cells).rstrip()

    return [line(row) for row in rows]


def _drift_lines(drift: ClockDrift) -> list[str]:
    replica = drift.replica or "the replica that answered"
    lines = [
        "Clock drift (worst offenders)",
        f"  {replica} only: each replica keeps its own, in memory, since it started; "
        f"leeway {drift.leeway:g} s, {MARK} beyond {drift.warn_above:g} s",
    ]
    if not drift.clients:
        return [*lines, "  no samples yet: no client assertion or DPoP proof verified on this replica"]
    lines += [f"  {line}" for line in _table(_drift_rows(drift))]
    lines.append("  seconds are server time - iat: negative, the client's clock runs ahead; positive, behind")
    if any(drift.drifting(report) for report in drift.clients):
        lines.append(f"  {MARK}: fix time sync (NTP/chrony) on that client ({RUNBOOK})")
    return lines


def _due_lines(due: tuple[ReportRow, ...] | None) -> list[str]:
    if due is None:
        return ["  API-key exceptions: not served by this token service"]
    if not due:
        return [f"  API-key exceptions: none overdue for review or due within {REVIEW_SOON.days} days"]
    lines = ["  API-key exceptions due for review (spiffe-broker exceptions review NAME):"]
    for row in due:
        when = "OVERDUE since" if row.review_overdue else "due"
        lines.append(f"    {row.name} ({row.owner}): {when} {row.review_due.isoformat(timespec='minutes')}")
    return lines


def _worst_drift_line(drift: ClockDrift) -> str:
    if not drift.clients:
        return "  worst clock drift: no samples yet"
    worst = max(drift.clients, key=lambda report: abs(report.drift))
    mark = f" {MARK}" if drift.drifting(worst) else ""
    return f"  worst clock drift: {_seconds(worst.drift)} s ({worst.client}, {worst.source.value}){mark}"


def status_lines(url: str, found: ServiceStatus) -> list[str]:
    where = f" (replica {found.drift.replica})" if found.drift.replica else ""
    header = f"token service {url}{where}"
    return [header, f"  {_store_line(found.store)}", f"  {_keys_line(found.keys)}", _worst_drift_line(found.drift),
            *_due_lines(found.due), "", *_drift_lines(found.drift)]  # fmt: skip


# -- command ---------------------------------------------------------------------------------------------------


def _remote(config_file: Path | None, options: dict[str, Any], sidecar: str | None) -> RemoteTarget | None:
    local = LocalTarget(config_file)
    remote = RemoteTarget(
        options["admin_url"], options["server_id"], options["workload_api"], options["cert"], options["key"],
        tuple(options["bundle"]),
    )  # fmt: skip
    if remote.check(local):
        return remote
    if sidecar is not None and options["admin_url"] is None:
        return None  # the node only
    raise click.UsageError(
        "status asks this node's sidecar (--sidecar SOCKET) and/or the running token service (the clock drift "
        "lives in its memory): give --admin-url https://host:port and --server-id SPIFFE_ID"
    )


@click.command("status", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=DEFAULT_LIMIT, show_default=True,
              help="clock-drift rows: the clients furthest from the service's clock")  # fmt: skip
@remote_options
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="TOML config file")
@click.option("--sidecar", metavar="SOCKET", help="this node's sidecar socket (a path or unix:///path): its SVID, "
              "token service, cached tokens and revocation feed")  # fmt: skip
@json_option
@cli_errors()
def status(limit: int, config_file: Path | None, sidecar: str | None, as_json: bool, **options: Any) -> None:
    """Show this node's sidecar and/or the running token service: SVID, cached tokens, feed lag; store, signing
    keys, clock drift and the API-key exceptions due for review."""
    remote = _remote(config_file, options, sidecar)
    settings = LocalTarget(config_file).settings()

    async def ask() -> tuple[dict[str, Any] | None, ServiceStatus | None]:
        node = await read_node_status(sidecar) if sidecar is not None else None
        if remote is None:
            return node, None
        async with remote.client(settings) as admin:
            return node, await read_status(admin, limit)

    node, found = run_event_loop(ask())
    if as_json:
        document = {"sidecar": node} if node is not None else {}
        document.update(status_document(found) if found is not None else {})
        click.echo(json.dumps(document, indent=2, sort_keys=True))
        return
    lines = node_lines(sidecar, node) if sidecar is not None and node is not None else []
    if remote is not None and found is not None:
        lines += ([""] if lines else []) + status_lines(str(remote.admin_url), found)
    click.echo("\n".join(lines))
