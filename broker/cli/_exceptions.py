"""What ``spiffe-broker exceptions`` reads and prints: the secret (stdin or a file, never an argument), an exception
from a workloads file (and ``sync``'s comparison with the registry), and the tables, JSON and CSV it writes.

A secret is read from ``--secret-stdin`` (a hidden prompt when stdin is a terminal) or ``--secret-file PATH``
(``/dev/stdin`` too), at most :data:`~broker.apikeys.model.MAX_SECRET_BYTES` bytes plus one line ending, which
is removed. An empty secret is refused, and so is one the model refuses (CR, LF, control characters, too large),
before anything is sent; no message quotes it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import sys
from collections.abc import Sequence
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from broker.admin.apikeys_wire import ExceptionView, report_document, view_document
from broker.admin.client import AdminClient
from broker.apikeys.model import MAX_SECRET_BYTES, ApiKeyException, Delivery, Presentation, State, Target
from broker.apikeys.registry import Amendment
from broker.apikeys.report import Report, ReportRow
from broker.apikeys.sealing import secret_text
from broker.cli._state import iso
from broker.errors import BrokerError, ConfigError
from broker.events.revocations import SubjectPattern
from broker.registration.exceptions import DeclaredException
from broker.registration.loader import load_workloads

__all__ = [
    "declared_record",
    "echo_json",
    "parse_target",
    "print_report",
    "print_show",
    "print_views",
    "read_secret",
    "sync_declared",
]


def read_secret(secret_stdin: bool, secret_file: Path | None) -> bytes:
    """The secret from exactly one of stdin and a file; click.UsageError or a broker error, never quoting it."""
    if secret_stdin == (secret_file is not None):
        raise click.UsageError("give exactly one of --secret-stdin and --secret-file (a secret is never an argument)")
    if secret_file is not None:
        source = str(secret_file)
        with secret_file.open("rb") as handle:
            _warn_if_shared(handle.fileno(), source)
            raw = handle.read(MAX_SECRET_BYTES + 3)
    else:
        source = "stdin"
        stdin = sys.stdin.buffer
        if sys.stdin.isatty():
            typed: str = click.prompt("secret", hide_input=True, default="", show_default=False)
            raw = typed.encode("utf-8")
        else:
            raw = stdin.read(MAX_SECRET_BYTES + 3)
    secret = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith(b"\n") else raw
    if not secret:
        raise click.UsageError(f"the secret read from {source} is empty: pipe it in, e.g. from your secret manager")
    secret_text(secret)  # InvalidExceptionError: too large, CR/LF, not printable (never quoted)
    return secret


def _warn_if_shared(fd: int, source: str) -> None:
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode) and mode & 0o077:
        click.echo(f"warning: {source} is readable by other users (mode {mode & 0o777:04o}): delete it once loaded",
                   err=True)  # fmt: skip


def parse_target(url: str, wildcard: bool) -> Target:
    """``https://host[:port][/path-prefix]`` as a target (the registry checks the rest)."""
    try:
        parts = urlsplit(url)
        port = parts.port or 443
    except ValueError:
        raise ConfigError(f"--target {url!r} is not a URL: https://host[:port]/path-prefix") from None
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.query or parts.fragment:
        raise ConfigError("--target must be https://host[:port]/path-prefix (no credentials, query or fragment)")
    return Target(parts.hostname, port, parts.path or "/", parts.scheme, wildcard)


def declared_record(declared: DeclaredException, default_review_days: int) -> ApiKeyException:
    """The exception a workloads file declares (the registry applies the rules when it is sent)."""
    return ApiKeyException(
        name=declared.name,
        target=Target(declared.host, declared.port, declared.path_prefix, declared.scheme, declared.wildcard_host),
        owner=declared.owner,
        contact=declared.contact,
        justification=declared.justification,
        ticket=declared.ticket,
        expires_at=declared.expires_at.astimezone(UTC),
        review_interval=timedelta(days=declared.review_interval_days or default_review_days),
        allowed=tuple(SubjectPattern.parse(text) for text in declared.allowed),
        presentation=Presentation(declared.presentation_kind, declared.presentation_name, declared.template),
        delivery=Delivery(declared.delivery),
    )


# -- sync ------------------------------------------------------------------------------------------------------


def _difference(current: ApiKeyException, wanted: ApiKeyException) -> Amendment:
    """The metadata ``wanted`` changes in ``current`` (the fields ``update`` may change)."""

    def changed(name: str) -> Any:
        value = getattr(wanted, name)
        return None if value == getattr(current, name) else value

    allowed = None if set(wanted.allowed) == set(current.allowed) else wanted.allowed
    return Amendment(owner=changed("owner"), contact=changed("contact"), justification=changed("justification"),
                     ticket=changed("ticket"), expires_at=changed("expires_at"),
                     review_interval=changed("review_interval"), allowed=allowed,
                     presentation=changed("presentation"))  # fmt: skip


async def sync_declared(admin: AdminClient, path: Path, dry_run: bool, reason: str) -> list[tuple[str, str, bool]]:
    """``(name, what happened, failed)`` for every declared and every registered exception."""
    existing = {view.record.name: view for view in await admin.apikeys()}
    declared = load_workloads(path).api_key_exceptions
    results: list[tuple[str, str, bool]] = []
    for item in declared:
        view = existing.get(item.name)
        if view is None:
            hint = f"spiffe-broker exceptions add --from-workloads {path} --name {item.name} --secret-stdin"
            results.append((item.name, f"declared, no secret yet: load it with '{hint}'", False))
            continue
        wanted = declared_record(item, item.review_interval_days or view.record.review_interval.days)
        if view.record.state is State.REVOKED or (wanted.target, wanted.delivery) != (
            view.record.target, view.record.delivery
        ):  # fmt: skip
            results.append(
                (item.name, "not synced: revoked, or its target or delivery differs (a new exception)", True)
            )
            continue
        amendment = _difference(view.record, wanted)
        fields = ", ".join(name for name in Amendment.__dataclass_fields__ if getattr(amendment, name) is not None)
        if not amendment:
            results.append((item.name, "in line with the file", False))
        elif dry_run:
            results.append((item.name, f"would change {fields}", False))
        else:
            results.append(await _apply(admin, item.name, amendment, reason, fields))
    names = {item.name for item in declared}
    results += [(name, "registered, not declared in the file", False) for name in existing if name not in names]
    return results


async def _apply(
    admin: AdminClient, name: str, amendment: Amendment, reason: str, fields: str
) -> tuple[str, str, bool]:
    try:
        await admin.update_apikey(name, amendment, reason=reason)
    except BrokerError as exc:  # one refused change does not stop the others
        return name, f"refused: {exc.error}: {exc.description}", True
    return name, f"updated {fields}", False


# -- output ----------------------------------------------------------------------------------------------------


def echo_json(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True))


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip())


def print_views(views: Sequence[ExceptionView], as_json: bool) -> None:
    if as_json:
        echo_json({"apikeys": [view_document(view) for view in views]})
        return
    if not views:
        click.echo("no API-key exception is registered")
        return
    rows = [("NAME", "STATUS", "OWNER", "EXPIRES", "DELIVERY", "TARGET")]
    rows += [(v.record.name, v.status.value, v.record.owner, iso(v.record.expires_at), v.record.delivery.value,
              str(v.record.target)) for v in views]  # fmt: skip
    _table(rows)


def print_show(view: ExceptionView, as_json: bool) -> None:
    if as_json:
        echo_json(view_document(view))
        return
    record = view.record
    presentation = record.presentation
    rows = [
        ("name", record.name), ("status", view.status.value), ("target", str(record.target)),
        ("placeholder", record.placeholder), ("owner", record.owner), ("contact", record.contact),
        ("ticket", record.ticket), ("justification", record.justification), ("expires_at", iso(record.expires_at)),
        ("review_due", iso(view.review_due)), ("last_review", f"{iso(record.last_review_at)} {record.last_review_by}"),
        ("allowed", ", ".join(p.text for p in record.allowed)),
        ("presentation", f"{presentation.kind} {presentation.name}: {presentation.template}"),
        ("delivery", record.delivery.value + ("  (the app receives the secret)" if record.delivery is Delivery.REVEAL
                                               else "")),
        ("state_reason", record.state_reason or "-"), ("current_version", str(record.current_version)),
    ]  # fmt: skip
    for name, value in rows:
        click.echo(f"{name + ':':<18}{value}")
    for v in view.versions:
        ended = "current" if v.superseded_at is None else f"superseded {iso(v.superseded_at)}"
        click.echo(f"{'version ' + str(v.version) + ':':<18}created {iso(v.created_at)}, {ended}, KEK {v.kek_id}")


def _idle(row: ReportRow) -> str:
    return f"unused for {row.idle_days} days" if row.unused else f"{row.idle_days} days idle"


def print_report(report: Report, fmt: str) -> None:
    if fmt == "json":
        echo_json(report_document(report))
    elif fmt == "csv":
        click.echo(report_csv(report), nl=False)
    else:
        _report_table(report)


def _report_table(report: Report) -> None:
    if not report.rows:
        click.echo("no API-key exception is registered")
        return
    rows = [("NAME", "OWNER", "STATUS", "EXPIRES IN", "REVIEW DUE", "LAST USE", "IDLE", "DELIVERY")]
    for r in report.rows:
        rows.append((r.name, r.owner, r.status.value, f"{r.days_to_expiry} d", iso(r.review_due),
                     iso(r.last_used_at) if r.last_used_at else "never", _idle(r),
                     "REVEAL (app holds the secret)" if r.reveal else r.delivery.value))  # fmt: skip
    _table(rows)
    for r in report.rows:
        for use in r.uses:
            click.echo(f"  {r.name}: last use by {use.spiffe_id} at {iso(use.last_used_at)} ({use.count} uses)")


_CSV_COLUMNS = ("name", "owner", "contact", "ticket", "status", "delivery", "expires_at", "days_to_expiry",
                "review_due", "review_overdue", "last_used_at", "idle_days", "unused", "workload", "workload_last_use",
                "workload_uses")  # fmt: skip


def report_csv(report: Report) -> str:
    """One line per exception and workload (an exception never used: one line without a workload). A cell that a
    spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``) is prefixed with ``'``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for r in report.rows:
        head = [r.name, r.owner, r.contact, r.ticket, r.status.value, r.delivery.value, iso(r.expires_at),
                r.days_to_expiry, iso(r.review_due), r.review_overdue, iso(r.last_used_at) if r.last_used_at else "",
                r.idle_days, r.unused]  # fmt: skip
        for use in r.uses or (None,):
            tail = ["", "", ""] if use is None else [use.spiffe_id, iso(use.last_used_at), use.count]
            writer.writerow([_cell(value) for value in (*head, *tail)])
    return out.getvalue()


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value  # CSV injection: text a spreadsheet would evaluate
    return str(value)
