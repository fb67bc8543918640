"""``spiffe-broker store status|migrate``: the state store's engine, schema version and contents (issue 9 item 1).

Both work on the store itself (``--store URL``, else ``[store] url``, else ``sqlite:///<state-dir>/broker.db``);
the URL is only ever shown redacted (no password).

* ``status`` opens the store without migrating it and prints the engine, the URL, the schema version against
  the latest this binary knows, the signing keys by state, the issuance ledger's rows (all, and those still
  live) and the audit journal's head (``SEQ:HASH``, the value ``audit verify --expect-head`` takes). A store
  whose schema is behind is reported as such, with the command that migrates it (its contents are not read);
  one whose schema is newer than this binary, or that is not a broker store, is the store's own error (exit 1).
* ``migrate`` applies the pending migrations (under the engine's lock, so a replica starting at the same time
  does not apply one twice), prints from which version to which, and appends a ``store.migrated`` audit record
  when it changed something. A newer schema is refused, and nothing is changed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from broker._eventloop import run as run_event_loop
from broker.cli._state import LocalTarget, json_option, local_options, record_change
from broker.cli.main import cli_errors
from broker.errors import StoreSchemaBehindError
from broker.server.stateful import open_migrated
from broker.store import Store, latest_version, open_store
from broker.store.url import StoreUrl
from broker.tokens.keystore import KeyState

__all__ = ["store"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # every ledger row expires after it: "live at the epoch" counts them all


@dataclass(frozen=True, slots=True)
class Contents:
    keys: dict[str, int]  # state -> how many keys
    ledger_rows: int
    ledger_live: int
    audit_records: int
    audit_head: str | None  # "SEQ:HASH"


@dataclass(frozen=True, slots=True)
class Status:
    engine: str
    url: str
    schema_version: int
    latest_version: int
    contents: Contents | None  # None when the schema is behind (not read)

    @property
    def up_to_date(self) -> bool:
        return self.schema_version == self.latest_version


async def _contents(store: Store) -> Contents:
    records = await store.keyring.keys()
    by_state = {str(state): sum(1 for r in records if r.state is state) for state in KeyState}
    now = datetime.now(UTC)
    rows = live = 0
    for record in records:  # the ledger is indexed by kid; every row names a key of the keyring
        rows += (await store.ledger.blast_radius(record.kid, EPOCH, top=0)).live_tokens
        live += (await store.ledger.blast_radius(record.kid, now, top=0)).live_tokens
    head = await store.audit.last()
    return Contents(
        keys=by_state,
        ledger_rows=rows,
        ledger_live=live,
        audit_records=head.seq if head else 0,
        audit_head=f"{head.seq}:{head.hash.hex()}" if head else None,
    )


async def _status(url: StoreUrl) -> Status:
    try:
        opened = await open_store(url, migrate=False)
    except StoreSchemaBehindError as behind:
        return Status(url.kind, url.redacted(), behind.current, latest_version(), None)
    try:
        version = await opened.schema_version()
        return Status(url.kind, url.redacted(), version, latest_version(), await _contents(opened))
    finally:
        await opened.close()


def _status_lines(status: Status) -> list[str]:
    lines = [f"store:  {status.url} ({status.engine})"]
    if status.up_to_date:
        lines.append(f"schema: version {status.schema_version}, the latest this binary knows")
    elif status.schema_version == 0:
        lines.append(
            f"schema: none yet (a new store): run spiffe-broker store migrate (to version {status.latest_version})"
        )
    else:
        lines.append(
            f"schema: version {status.schema_version}, behind this binary's {status.latest_version}: "
            "run spiffe-broker store migrate (back up the store first)"
        )
    contents = status.contents
    if contents is None:
        return lines
    lines.append("keys:   " + ", ".join(f"{count} {state}" for state, count in contents.keys.items()))
    lines.append(f"ledger: {contents.ledger_rows} tokens recorded, {contents.ledger_live} of them still live")
    head = f"head {contents.audit_head}" if contents.audit_head else "empty"
    lines.append(f"audit:  {contents.audit_records} records, {head}")
    return lines


@click.group("store", context_settings={"help_option_names": ["-h", "--help"]})
def store() -> None:
    """The state store: its engine, schema version and contents; schema migrations."""


@store.command("status")
@local_options
@json_option
@cli_errors()
def status_command(config_file: Path | None, state_dir: Path | None, store_url: str | None, as_json: bool) -> None:
    """Show the store's engine, redacted URL, schema version (against this binary's) and what it holds."""
    settings = LocalTarget(config_file, state_dir, store_url).settings()
    status = run_event_loop(_status(StoreUrl.parse(settings.store_url())))
    if as_json:
        document: dict[str, Any] = {
            "engine": status.engine,
            "url": status.url,
            "schema_version": status.schema_version,
            "latest_version": status.latest_version,
            "up_to_date": status.up_to_date,
            "contents": asdict(status.contents) if status.contents else None,
        }
        click.echo(json.dumps(document, indent=2, sort_keys=True))
    else:
        click.echo("\n".join(_status_lines(status)))


async def _migrate(url: StoreUrl) -> tuple[int, int]:
    """Migrate; (from, to), equal when there was nothing to do. The migration is audited in the same store."""
    opened, migrated = await open_migrated(url)
    try:
        if migrated is None:
            version = await opened.schema_version()
            return version, version
        done = f"store migrated from schema version {migrated.from_version} to {migrated.to_version}"
        await record_change(opened, migrated, done)
        return migrated.from_version, migrated.to_version
    finally:
        await opened.close()


@store.command("migrate")
@local_options
@cli_errors()
def migrate_command(config_file: Path | None, state_dir: Path | None, store_url: str | None) -> None:
    """Apply the pending schema migrations now (each start of the token service does it too)."""
    settings = LocalTarget(config_file, state_dir, store_url).settings()
    url = StoreUrl.parse(settings.store_url())
    before, after = run_event_loop(_migrate(url))
    if before == after:
        click.echo(f"store {url.redacted()} is at schema version {after}, the latest: nothing to do")
    else:
        click.echo(f"store {url.redacted()} migrated from schema version {before} to {after}")
