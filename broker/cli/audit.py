"""``spiffe-broker audit verify|tail``: check the audit journal's hash chain, and print its records.

Both read a local store (``--store URL``, else ``[store] url``, else ``sqlite:///<state_dir>/broker.db``), opened
without migrating it: an older schema is refused with the command that migrates it. ``verify`` exits 1 when the
chain is broken and names the first broken record and how (:mod:`broker.audit.verify`); it prints the head
``SEQ:HASH`` to keep elsewhere, and ``--expect-head`` checks a head kept earlier (a hash chain alone cannot see
the newest records deleted). ``tail --json`` prints one JSON object per line, for a SIEM.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from broker._eventloop import run as run_event_loop
from broker.audit.journal import AuditJournalStore, AuditRecord
from broker.audit.query import body_of, event_matches, spiffe_ids_in
from broker.audit.verify import Head, VerifyReport, read_all, verify_journal
from broker.cli.main import cli_errors
from broker.config import load_settings
from broker.store import Store, open_store

__all__ = ["audit"]

PAGE = 500


def _store_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="TOML config file"
    )(command)
    command = click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="state directory holding broker.db  [default: .spiffe-broker]",
    )(command)
    return click.option(
        "--store",
        "store",
        metavar="URL",
        help="store URL  [default: [store] url, else sqlite:///<state-dir>/broker.db]",
    )(command)


def _url(config_file: Path | None, state_dir: Path | None, store: str | None) -> str:
    overrides: dict[str, Any] = {} if state_dir is None else {"state_dir": state_dir}
    if store is not None:
        overrides["store"] = {"url": store}
    return load_settings(config_file, overrides).store_url()


async def _with_store(url: str, run: Callable[[Store], Any]) -> Any:
    store = await open_store(url, migrate=False)
    try:
        return await run(store)
    finally:
        await store.close()


@click.group("audit", context_settings={"help_option_names": ["-h", "--help"]})
def audit() -> None:
    """Verify and read the audit journal (hash-chained, append-only)."""


@audit.command("verify")
@_store_options
@click.option("--expect-head", metavar="SEQ:HASH", help="a head printed by an earlier verify, kept outside the store")
@cli_errors()
def verify_command(
    config_file: Path | None, state_dir: Path | None, store: str | None, expect_head: str | None
) -> None:
    """Check the hash chain; exit 1 naming the first changed, deleted, inserted or reordered record."""
    try:
        head = None if expect_head is None else Head.parse(expect_head)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expect-head") from None
    url = _url(config_file, state_dir, store)
    report: VerifyReport = run_event_loop(_with_store(url, lambda s: verify_journal(s.audit, expect_head=head)))
    if report.first_break is None:
        where = "empty" if report.head is None else f"head {report.head}"
        click.echo(f"audit journal intact: {report.records} records; {where}")
        return
    broken = report.first_break
    click.echo(f"audit journal BROKEN at record {broken.seq} ({broken.kind}): {broken.detail}", err=True)
    sound = "none" if report.head is None else f"up to {report.head}"
    click.echo(f"{report.records} records before it are sound ({sound})", err=True)
    sys.exit(1)


def _since(value: str | None) -> int | datetime | None:
    if value is None or value.isdigit():
        return None if value is None else int(value)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            "a seq (42) or an ISO 8601 time (2026-01-02T03:04:05Z)", param_hint="--since"
        ) from None
    if at.tzinfo is None:
        raise click.BadParameter("give the time zone, e.g. 2026-01-02T03:04:05Z", param_hint="--since")
    return at


@audit.command("tail")
@_store_options
@click.option("--since", metavar="SEQ|TIME", help="from this seq, or from this ISO 8601 time (with its zone)")
@click.option("--spiffe-id", help="only records naming this SPIFFE ID (subject, client, actor)")
@click.option("--event", "events", multiple=True, help="only this event (repeatable); 'token.*' matches a family")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line (for a SIEM)")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True, help="at most N records; 0: all")
@cli_errors()
def tail_command(
    config_file: Path | None,
    state_dir: Path | None,
    store: str | None,
    since: str | None,
    spiffe_id: str | None,
    events: tuple[str, ...],
    as_json: bool,
    limit: int,
) -> None:
    """Print audit records: the newest (default), or from --since on, oldest first."""
    start = _since(since)
    url = _url(config_file, state_dir, store)
    wanted = _matcher(spiffe_id, events, start if isinstance(start, datetime) else None)

    async def run(opened: Store) -> list[AuditRecord]:
        if start is None:
            return await _newest(opened.audit, wanted, limit)
        return await _from(opened.audit, start if isinstance(start, int) else 1, wanted, limit)

    for record in run_event_loop(_with_store(url, run)):
        click.echo(_json_line(record) if as_json else _text_line(record))


def _matcher(spiffe_id: str | None, events: Sequence[str], since: datetime | None) -> Callable[[AuditRecord], bool]:
    def wanted(record: AuditRecord) -> bool:
        if since is not None and record.at < since:
            return False
        if events and not any(event_matches(record.event, pattern) for pattern in events):
            return False
        return spiffe_id is None or spiffe_id in spiffe_ids_in(record)

    return wanted


async def _from(
    journal: AuditJournalStore, first: int, wanted: Callable[[AuditRecord], bool], limit: int
) -> list[AuditRecord]:
    found: list[AuditRecord] = []
    async with contextlib.aclosing(read_all(journal, first=max(first, 1), page=PAGE)) as records:
        async for record in records:
            if wanted(record):
                found.append(record)
                if len(found) == limit:
                    break
    return found


async def _newest(journal: AuditJournalStore, wanted: Callable[[AuditRecord], bool], limit: int) -> list[AuditRecord]:
    """The newest ``limit`` wanted records, oldest first, read a page at a time from the head backwards."""
    head = await journal.last()
    if head is None:
        return []
    if limit == 0:
        return await _from(journal, 1, wanted, 0)
    found: list[AuditRecord] = []
    end = head.seq
    while end >= 1 and len(found) < limit:
        first = max(1, end - PAGE + 1)
        page = [r for r in await journal.read(first, end - first + 1) if wanted(r)]
        found = page[-(limit - len(found)) :] + found
        end = first - 1
    return found


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _text_line(record: AuditRecord) -> str:
    body = record.body.decode("utf-8", "replace")
    return f"{record.seq} {_iso(record.at)} {record.event} {body}"


def _json_line(record: AuditRecord) -> str:
    line = {
        "seq": record.seq,
        "at": _iso(record.at),
        "event": record.event,
        "body": body_of(record),
        "prev_hash": record.prev_hash.hex(),
        "hash": record.hash.hex(),
    }
    return json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
