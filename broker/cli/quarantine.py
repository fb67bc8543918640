"""``spiffe-broker quarantine add|release|list``: cut a SPIFFE ID (or every ID under a path) off in one step.

Remote (``--admin-url`` with ``--server-id``: the running service's admin API, audited there under the caller's
SPIFFE ID) or local (the store directly, ``--store``/``--state-dir``, for a node without a running service; the
services follow the change through the store's ``revocations`` change events); see :mod:`broker.cli._state`.

* ``add PATTERN --reason TEXT [--until TIME] [--all-of-trust-domain]``: PATTERN is a SPIFFE ID or
  ``spiffe://td/path/*`` (every ID under ``path/``); ``spiffe://td/*`` needs ``--all-of-trust-domain``. TIME is
  RFC 3339 with its offset (``2030-01-02T03:04:05Z``) or a duration (``90s``, ``30m``, ``2h``, ``7d``), counted
  by the service's clock (the store's host, in local mode). New grants for matching IDs are refused on every
  replica, and every live token of theirs is revoked on the feed (:mod:`broker.tokens.quarantine`).
* ``release PATTERN``: ends the quarantine of exactly PATTERN. The tokens it revoked stay revoked.
* ``list``: the quarantines in force, with their reason, since when and until when.

The cutoff holds for the longest lifetime any policy may allow
(:data:`~broker.tokens.policy.MAX_TOKEN_LIFETIME`) plus leeway, here as in the service: a longer cutoff only keeps
the log entry longer. Its audit records name no actor (the local CLI).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import click

from broker._eventloop import run as run_event_loop
from broker.admin.client import AdminChange
from broker.admin.wire import quarantine_added_document, quarantine_released_document, quarantines_document
from broker.audit.trail import AuditTrail
from broker.cli._state import LocalTarget, RemoteTarget, iso, json_option, local_options, remote_options, with_store
from broker.cli.main import cli_errors
from broker.config import BrokerSettings
from broker.events.revocations import SubjectQuarantined
from broker.store import Store
from broker.tokens.policy import MAX_TOKEN_LIFETIME
from broker.tokens.quarantine import Quarantined, Quarantines, Released, parse_pattern, parse_until

__all__ = ["quarantine"]

RUNBOOK = "docs/operations.md, 'Suspected workload compromise'"


def _targets(options: dict[str, Any]) -> tuple[LocalTarget, RemoteTarget | None]:
    local = LocalTarget(options["config_file"], options["state_dir"], options["store_url"])
    remote = RemoteTarget(
        options["admin_url"], options["server_id"], options["workload_api"], options["cert"], options["key"],
        tuple(options["bundle"]),
    )  # fmt: skip
    return local, (remote if remote.check(local) else None)


def _local(store: Store, settings: BrokerSettings) -> Quarantines:
    window = timedelta(seconds=MAX_TOKEN_LIFETIME + settings.keyring.leeway)
    return Quarantines(store.revocations, store.ledger, AuditTrail(store.audit), window=lambda: window, clock=time.time)


# -- output ----------------------------------------------------------------------------------------------------


def _echo_json(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True))


def _warn_unaudited(audited: bool) -> None:
    if not audited:
        click.echo("warning: the service made the change, but its audit journal did not record the outcome", err=True)


def _until(quarantine: SubjectQuarantined) -> str:
    return "until released" if quarantine.until is None else f"until {iso(quarantine.until)}"


def _print_added(change: AdminChange[Quarantined], as_json: bool) -> None:
    added = change.result
    quarantine = added.quarantine
    if as_json:
        _echo_json({**quarantine_added_document(added), "audited": change.audited})
    else:
        click.echo(f"quarantined: {quarantine.pattern} ({_until(quarantine)}); log seq {added.seq}")
        click.echo("  new grants for matching SPIFFE IDs are refused on every replica")
        if added.live_tokens is not None:
            more = " (and more: the cutoff below refuses them too)" if added.truncated else ""
            click.echo(f"  live tokens revoked on the feed: {added.live_tokens}{more}")
        click.echo(f"  tokens issued to them until now stay refused until {iso(quarantine.cutoff_until)}")
        click.echo(
            f"next: re-key or delete its SPIRE entry, then 'quarantine release {quarantine.pattern}' ({RUNBOOK})"
        )
    if added.ledger_error is not None:
        click.echo(
            f"warning: the issuance ledger did not answer ({added.ledger_error}): the live tokens are refused by the "
            "quarantine's cutoff, but their count is unknown",
            err=True,
        )
    _warn_unaudited(change.audited)


def _print_released(change: AdminChange[Released], as_json: bool) -> None:
    released = change.result
    quarantine = released.quarantine
    if as_json:
        _echo_json({**quarantine_released_document(released), "audited": change.audited})
    else:
        click.echo(f"released: {quarantine.pattern} (quarantined since {iso(quarantine.at)}); log seq {released.seq}")
        click.echo(
            f"  tokens issued before {iso(quarantine.at)} stay refused until {iso(quarantine.cutoff_until)}; "
            "new grants are allowed again"
        )
    _warn_unaudited(change.audited)


def _print_list(quarantines: Sequence[SubjectQuarantined], as_json: bool) -> None:
    if as_json:
        _echo_json(quarantines_document(list(quarantines)))
        return
    if not quarantines:
        click.echo("no quarantine is in force")
        return
    rows = [("PATTERN", "SINCE", "UNTIL", "REASON")]
    rows += [(q.pattern.text, iso(q.at), iso(q.until) if q.until else "(release)", q.reason) for q in quarantines]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[3]]))


# -- commands --------------------------------------------------------------------------------------------------


@click.group("quarantine", context_settings={"help_option_names": ["-h", "--help"]})
def quarantine() -> None:
    """Quarantine a SPIFFE ID or a path's IDs: no new tokens, live tokens revoked on every replica's feed."""


@quarantine.command("add")
@click.argument("pattern", metavar="SPIFFE_ID|spiffe://TD/PATH/*")
@click.option("--reason", required=True, help="why (audit journal and quarantine list; never on the feed)")
@click.option("--until", "until", metavar="TIME", help="RFC 3339 time or a duration (30m, 2h, 7d)  [default: release]")
@click.option("--all-of-trust-domain", is_flag=True, help="allow spiffe://TD/*: every SPIFFE ID of the trust domain")
@remote_options
@local_options
@json_option
@cli_errors()
def add_command(
    pattern: str, reason: str, until: str | None, all_of_trust_domain: bool, as_json: bool, **options: Any
) -> None:
    """Quarantine PATTERN now: refuse its grants everywhere and revoke its live tokens."""
    whole = all_of_trust_domain
    local, remote = _targets(options)
    settings = local.settings()
    if remote is not None:

        async def ask() -> AdminChange[Quarantined]:
            async with remote.client(settings) as admin:
                return await admin.quarantine(
                    pattern, reason=reason, until=until, all_of_trust_domain=all_of_trust_domain
                )

        change = run_event_loop(ask())
    else:
        parsed = parse_pattern(pattern, all_of_trust_domain=whole)

        async def add(store: Store) -> AdminChange[Quarantined]:
            service = _local(store, settings)
            when = None if until is None else parse_until(until, service.now())
            return AdminChange(await service.add(parsed, reason, when, None), audited=True)

        change = run_event_loop(with_store(settings.store_url(), add))
    _print_added(change, as_json)


@quarantine.command("release")
@click.argument("pattern", metavar="SPIFFE_ID|spiffe://TD/PATH/*")
@click.option("--reason", help="remote: why, for the service's audit record")
@remote_options
@local_options
@json_option
@cli_errors()
def release_command(pattern: str, reason: str | None, as_json: bool, **options: Any) -> None:
    """End the quarantine of exactly PATTERN (release only after re-keying); revoked tokens stay revoked."""
    local, remote = _targets(options)
    if reason is not None and remote is None:
        raise click.UsageError("--reason goes with --admin-url (the local subject.released record has no reason)")
    settings = local.settings()
    if remote is not None:

        async def ask() -> AdminChange[Released]:
            async with remote.client(settings) as admin:
                return await admin.release_quarantine(pattern, reason=reason)

        change = run_event_loop(ask())
    else:
        parsed = parse_pattern(pattern, all_of_trust_domain=True)

        async def release(store: Store) -> AdminChange[Released]:
            return AdminChange(await _local(store, settings).release(parsed, None), audited=True)

        change = run_event_loop(with_store(settings.store_url(), release))
    _print_released(change, as_json)


@quarantine.command("list")
@remote_options
@local_options
@json_option
@cli_errors()
def list_command(as_json: bool, **options: Any) -> None:
    """List the quarantines in force: pattern, since, until, reason."""
    local, remote = _targets(options)
    settings = local.settings()
    if remote is not None:

        async def ask() -> list[SubjectQuarantined]:
            async with remote.client(settings) as admin:
                return await admin.quarantines()

        found = run_event_loop(ask())
    else:

        async def read(store: Store) -> list[SubjectQuarantined]:
            return await _local(store, settings).in_force()

        found = run_event_loop(with_store(settings.store_url(), read))
    _print_list(found, as_json)
