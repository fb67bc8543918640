"""``spiffe-broker exceptions``: governed API-key exceptions (issue 12; docs/exceptions.md), through the running
service's admin API (``--admin-url`` with ``--server-id``, mTLS with the caller's X.509-SVID; see
:mod:`broker.cli._state`). There is no local mode: every change, every review and every reveal names the admin
SPIFFE ID that made it, which only the admin API verifies.

* ``add --name NAME (flags | --from-workloads FILE) (--secret-stdin | --secret-file PATH)``: register an exception
  with its first secret version. ``--from-workloads`` takes the metadata from the file's ``api_key_exceptions``.
* ``update NAME [--owner ...] [--expires ...] [--allow ...] [--reason TEXT]``: change metadata (not the target or
  the delivery); ``sync FILE [--dry-run]`` does it for every exception the file declares, and lists those that
  have no secret yet.
* ``list``, ``show NAME``; ``show NAME --reveal --reason TEXT`` prints the current secret (the only command that
  does; audited by the service before it answers).
* ``rotate NAME (--secret-stdin | --secret-file PATH)``, ``suspend NAME --reason``, ``resume NAME``,
  ``revoke NAME --reason`` (final), ``review NAME --note``.
* ``report [--json | --csv] [--unused-days N] [--fail-on TERMS]``: the governance report. TERMS is a comma list of
  ``overdue``, ``expiring:<N>d``, ``unused:<N>d``, ``reveal`` (:class:`~broker.apikeys.report.FailOn`).

A secret is never a command-line argument (shell history, ``ps``): ``--secret-stdin`` reads it from stdin (a hidden
prompt on a terminal), ``--secret-file`` from a file, and an empty one is refused. Exit codes: 0 done; 1 an error
(``Error: <code>: <what is wrong>``); 2 a usage error; **3** ``report --fail-on`` matched at least one exception
(the report is printed first, the matches on stderr).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from broker._eventloop import run as run_event_loop
from broker.admin.apikeys_wire import ExceptionView, view_document
from broker.admin.client import AdminChange, AdminClient
from broker.apikeys.model import ApiKeyException, Delivery, Presentation
from broker.apikeys.registry import Amendment
from broker.apikeys.report import DEFAULT_UNUSED_DAYS, MAX_DAYS, FailOn
from broker.apikeys.rules import parse_expiry
from broker.cli._exceptions import (
    declared_record,
    echo_json,
    parse_target,
    print_report,
    print_show,
    print_views,
    read_secret,
    sync_declared,
)
from broker.cli._state import LocalTarget, RemoteTarget, iso, json_option, remote_options
from broker.cli.main import cli_errors
from broker.errors import ConfigError
from broker.events.revocations import SubjectPattern
from broker.registration.loader import load_workloads

__all__ = ["FAIL_ON_EXIT", "exceptions"]

T = TypeVar("T")
FAIL_ON_EXIT = 3
_PATH = click.Path(dir_okay=False, path_type=Path)
config_option = click.option("--config", "config_file", type=_PATH, help="TOML config file")
secret_options = (
    click.option("--secret-stdin", is_flag=True, help="read the secret from stdin (a hidden prompt on a terminal)"),
    click.option("--secret-file", type=_PATH, help="read the secret from this file (/dev/stdin works too)"),
)


def _with_secret(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(secret_options):
        command = option(command)
    return command


def _call(options: dict[str, Any], call: Callable[[AdminClient], Awaitable[T]]) -> T:
    """``call`` on the admin API named by the remote options (there is no local mode)."""
    if options["admin_url"] is None:
        raise click.UsageError("exceptions talks to the running service's admin API: pass --admin-url and --server-id")
    local = LocalTarget(options["config_file"])
    remote = RemoteTarget(options["admin_url"], options["server_id"], options["workload_api"], options["cert"],
                          options["key"], tuple(options["bundle"]))  # fmt: skip
    remote.check(local)
    settings = local.settings()

    async def ask() -> T:
        async with remote.client(settings) as admin:
            return await call(admin)

    return run_event_loop(ask())


def _changed(change: AdminChange[ExceptionView], done: str, as_json: bool) -> None:
    view = change.result
    if as_json:
        echo_json({**view_document(view), "audited": change.audited})
    else:
        click.echo(f"{done}: {view.record.name} (status {view.status.value})")
    if not change.audited:
        click.echo("warning: the service made the change, but its audit journal did not record the outcome", err=True)


def _expiry(text: str) -> datetime:
    return parse_expiry(text, datetime.now(UTC))


def _presentation(header: str | None, query: str | None, template: str | None) -> Presentation | None:
    if header is not None and query is not None:
        raise click.UsageError("give one of --header and --query: how the secret is presented")
    if header is None and query is None:
        if template is not None:
            raise click.UsageError("--template goes with --header or --query")
        return None
    return Presentation("header" if header else "query", header or query or "", template or "{secret}")


@click.group("exceptions", context_settings={"help_option_names": ["-h", "--help"]})
def exceptions() -> None:
    """Governed API-key exceptions: owned, expiring, reviewed, injected by the sidecar (docs/exceptions.md)."""


@exceptions.command("add")
@click.option("--name", required=True, help="the exception's name, a DNS label (never reused)")
@click.option("--from-workloads", type=_PATH, help="take the metadata from this workloads.yaml's api_key_exceptions")
@click.option("--target", metavar="URL", help="https://host[:port]/path-prefix the secret may be sent to")
@click.option("--wildcard-host", is_flag=True, help="the target host is *.example.com (if [apikeys] allows it)")
@click.option("--owner", help="the owning team")
@click.option("--contact", help="an e-mail address that reaches the owner")
@click.option("--justification", help="why a static key is still needed")
@click.option("--ticket", help="the external reference, e.g. SEC-1234 ([apikeys] ticket_pattern)")
@click.option("--expires", metavar="TIME", help="RFC 3339 (2027-03-01T00:00:00Z) or a duration (90d)")
@click.option("--review-days", type=click.IntRange(1, 366), help="review interval  [default: [apikeys] on the server]")
@click.option("--allow", "allowed", multiple=True, metavar="SPIFFE_ID", help="who may use it; ID or prefix/* (repeat)")
@click.option("--header", metavar="NAME", help="present the secret in this header")
@click.option("--query", metavar="NAME", help="present the secret in this query parameter")
@click.option("--template", help="the value, holding {secret} once  [default: {secret}]")
@click.option("--delivery", type=click.Choice([d.value for d in Delivery]), default="inject", show_default=True)
@_with_secret
@remote_options
@config_option
@json_option
@cli_errors()
def add_command(name: str, from_workloads: Path | None, secret_stdin: bool, secret_file: Path | None,
                as_json: bool, **given: Any) -> None:  # fmt: skip
    """Register an exception with its first secret (from stdin or a file, never an argument)."""
    options = {key: given.pop(key) for key in _REMOTE}
    if from_workloads is not None:
        record, server_review = _declared(from_workloads, name, given)
    else:
        record, server_review = _flags_record(name, given), given["review_days"] is None
    secret = read_secret(secret_stdin, secret_file)
    change = _call(options, lambda admin: admin.add_apikey(record, secret, server_default_review=server_review))
    _changed(change, "registered", as_json)
    if not as_json:
        click.echo(f"  apps use the placeholder {change.result.record.placeholder}; the sidecar injects the secret")


def _patterns(texts: tuple[str, ...], flag: str) -> tuple[SubjectPattern, ...]:
    try:
        return tuple(SubjectPattern.parse(text) for text in texts)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from None


def _declared(path: Path, name: str, given: dict[str, Any]) -> tuple[ApiKeyException, bool]:
    """The file's declaration of ``name``, and whether its review interval is the server's default."""
    flags = [f"--{key.replace('_', '-')}" for key, value in given.items() if value not in (None, False, (), "inject")]
    if flags:
        raise click.UsageError(f"--from-workloads takes the metadata from the file: drop {', '.join(flags)}")
    found = [d for d in load_workloads(path).api_key_exceptions if d.name == name]
    if not found:
        raise ConfigError(f"{path}: declares no exception named {name!r} under api_key_exceptions")
    return declared_record(found[0], found[0].review_interval_days or 1), found[0].review_interval_days is None


def _flags_record(name: str, given: dict[str, Any]) -> ApiKeyException:
    needed = ("target", "owner", "contact", "justification", "ticket", "expires")
    missing = [f"--{key}" for key in needed if given[key] is None] + ([] if given["allowed"] else ["--allow"])
    presentation = _presentation(given["header"], given["query"], given["template"])
    if presentation is None:
        missing.append("--header or --query")
    if missing:
        raise click.UsageError(f"add needs {', '.join(missing)} (or --from-workloads FILE)")
    return ApiKeyException(
        name=name, target=parse_target(given["target"], given["wildcard_host"]), owner=given["owner"],
        contact=given["contact"], justification=given["justification"], ticket=given["ticket"],
        expires_at=_expiry(given["expires"]), review_interval=timedelta(days=given["review_days"] or 1),
        allowed=_patterns(given["allowed"], "--allow"), presentation=presentation or Presentation("header", ""),
        delivery=Delivery(given["delivery"]),
    )  # fmt: skip


@exceptions.command("update")
@click.argument("name")
@click.option("--owner", help="the owning team")
@click.option("--contact", help="an e-mail address that reaches the owner")
@click.option("--justification", help="why a static key is still needed")
@click.option("--ticket", help="the external reference")
@click.option("--expires", metavar="TIME", help="a new expiry, within [apikeys] max_lifetime_days from now")
@click.option("--review-days", type=click.IntRange(1, 366), help="a new review interval")
@click.option("--allow", "allowed", multiple=True, metavar="SPIFFE_ID", help="the new allowed list (repeat)")
@click.option("--header", metavar="NAME", help="present the secret in this header from now on")
@click.option("--query", metavar="NAME", help="present the secret in this query parameter from now on")
@click.option("--template", help="the value, holding {secret} once")
@click.option("--reason", help="why, for the audit journal")
@remote_options
@config_option
@json_option
@cli_errors()
def update_command(name: str, reason: str | None, as_json: bool, **given: Any) -> None:
    """Change NAME's metadata (not its target or delivery: that is a new exception). Narrowing who may use it, its
    expiry or its presentation withdraws the secret from the sidecars at once."""
    options = {key: given.pop(key) for key in _REMOTE}
    amendment = Amendment(
        owner=given["owner"], contact=given["contact"], justification=given["justification"], ticket=given["ticket"],
        expires_at=None if given["expires"] is None else _expiry(given["expires"]),
        review_interval=None if given["review_days"] is None else timedelta(days=given["review_days"]),
        allowed=_patterns(given["allowed"], "--allow") or None,
        presentation=_presentation(given["header"], given["query"], given["template"]),
    )  # fmt: skip
    if not amendment:
        raise click.UsageError("give at least one field to change (see --help)")
    _changed(_call(options, lambda admin: admin.update_apikey(name, amendment, reason=reason)), "updated", as_json)


_REMOTE = ("admin_url", "server_id", "workload_api", "cert", "key", "bundle", "config_file")


@exceptions.command("list")
@remote_options
@config_option
@json_option
@cli_errors()
def list_command(as_json: bool, **options: Any) -> None:
    """List every exception: name, status, owner, expiry, delivery, target."""
    print_views(_call(options, lambda admin: admin.apikeys()), as_json)


@exceptions.command("show")
@click.argument("name")
@click.option("--reveal", is_flag=True, help="print the current secret instead (audited; needs --reason)")
@click.option("--reason", help="with --reveal: why, for the audit journal")
@remote_options
@config_option
@json_option
@cli_errors()
def show_command(name: str, reveal: bool, reason: str | None, as_json: bool, **options: Any) -> None:
    """Show NAME and its versions; with --reveal, print its current secret (the only command that prints one)."""
    if reveal != (reason is not None):
        raise click.UsageError("--reveal needs --reason (it is recorded in the audit journal), and --reason --reveal")
    if not reveal:
        print_show(_call(options, lambda admin: admin.apikey(name)), as_json)
        return
    change = _call(options, lambda admin: admin.reveal_apikey(name, reason or ""))
    revealed = change.result
    if as_json:
        echo_json({"name": revealed.name, "version": revealed.version, "secret": revealed.secret})
    else:
        click.echo(revealed.secret)
    click.echo(f"revealed version {revealed.version} of {revealed.name}: this is recorded in the audit journal",
               err=True)  # fmt: skip


@exceptions.command("rotate")
@click.argument("name")
@_with_secret
@remote_options
@config_option
@json_option
@cli_errors()
def rotate_command(name: str, secret_stdin: bool, secret_file: Path | None, as_json: bool, **options: Any) -> None:
    """Store a new secret version for NAME (from stdin or a file); the old one stays usable for the grace."""
    secret = read_secret(secret_stdin, secret_file)
    change = _call(options, lambda admin: admin.rotate_apikey(name, secret))
    rotated = change.result
    if as_json:
        echo_json({"apikey": view_document(rotated.apikey), "version": rotated.version,
                   "superseded": rotated.superseded, "superseded_usable_until": iso(rotated.superseded_usable_until),
                   "withdrawn": rotated.withdrawn, "audited": change.audited})  # fmt: skip
        return
    click.echo(f"rotated: {name} to version {rotated.version}")
    if rotated.withdrawn:
        click.echo(f"  sidecars dropped version {rotated.superseded} at once (rotation grace < hold time)")
    click.echo(f"  version {rotated.superseded} stays usable until {iso(rotated.superseded_usable_until)}: revoke it "
               "at the provider after that")  # fmt: skip


def _state_command(action: str, done: str, note: str | None, summary: str) -> None:
    @exceptions.command(action, help=summary)
    @click.argument("name")
    @click.option(f"--{note or 'reason'}", "note", required=note is not None,
                  help="why, for the audit journal" if note != "note" else "what the review found")  # fmt: skip
    @remote_options
    @config_option
    @json_option
    @cli_errors()
    def command(name: str, note: str | None, as_json: bool, **options: Any) -> None:
        _changed(_call(options, lambda admin: admin.change_apikey(name, action, note)), done, as_json)


_state_command("suspend", "suspended", "reason", "Refuse every grant of NAME and withdraw it from the sidecars now.")
_state_command("resume", "resumed", None, "Grant NAME again after a suspension.")
_state_command("revoke", "revoked", "reason", "Revoke NAME for good (final; the name is never reused).")
_state_command("review", "reviewed", "note", "Record your review of NAME now; the next is due one interval later.")


@exceptions.command("report")
@click.option("--json", "fmt", flag_value="json", help="print the report as JSON")
@click.option("--csv", "fmt", flag_value="csv", help="print one CSV line per exception and workload")
@click.option("--unused-days", type=click.IntRange(1, MAX_DAYS), default=DEFAULT_UNUSED_DAYS, show_default=True,
              help="mark exceptions unused for this many days")  # fmt: skip
@click.option(
    "--fail-on", metavar="TERMS", help="exit 3 if any exception matches: overdue,expiring:14d,unused:30d,reveal"
)
@remote_options
@config_option
@cli_errors()
def report_command(fmt: str | None, unused_days: int, fail_on: str | None, **options: Any) -> None:
    """The governance report: owner, status, days to expiry, review due, last use per workload, idle days, reveal.

    With --fail-on, exit code 3 when at least one exception (not revoked) matches a term."""
    try:
        terms = None if fail_on is None else FailOn.parse(fail_on)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fail-on") from None
    report = _call(options, lambda admin: admin.apikeys_report(unused_days))
    print_report(report, fmt or "table")
    matched = [(row.name, terms.matches(row)) for row in report.rows] if terms is not None else []
    matched = [(name, found) for name, found in matched if found]
    for name, found in matched:
        click.echo(f"fail-on: {name}: {', '.join(found)}", err=True)
    if matched:
        click.get_current_context().exit(FAIL_ON_EXIT)


@exceptions.command("sync")
@click.argument("workloads_file", type=_PATH)
@click.option("--dry-run", is_flag=True, help="say what would change; change nothing")
@remote_options
@config_option
@cli_errors()
def sync_command(workloads_file: Path, dry_run: bool, **options: Any) -> None:
    """Bring the metadata of registered exceptions in line with WORKLOADS_FILE's api_key_exceptions (owner,
    contact, justification, ticket, expiry within the cap, review interval, allowed workloads, presentation);
    list declared exceptions with no secret yet. Exit 1 if any could not be synced."""
    load_workloads(workloads_file)  # a broken file is refused before the service is asked
    reason = f"sync from {workloads_file.name}"
    results = _call(options, lambda admin: sync_declared(admin, workloads_file, dry_run, reason))
    for name, what, _ in results:
        click.echo(f"{name}: {what}")
    failed = [name for name, _, bad in results if bad]
    if failed:
        raise click.ClickException(f"not synced: {', '.join(failed)}")
