"""``spiffe-broker clients add|list|show|disable|enable|remove``: the client registry (issue 11 item 1).

A registered client authenticates with a key pair it holds, by a signed assertion (RFC 7523 §2.2,
``private_key_jwt``), and acts as ``--spiffe-id``: policy rules match that ID, a quarantine of it cuts the client
off, its tokens carry it as ``sub``.

Remote (``--admin-url`` with ``--server-id``: the running service's admin API, audited there under the caller's
SPIFFE ID) or local (the store directly, ``--store``/``--state-dir``; the services follow the change through the
store's ``clients`` change events, and the records name no actor); see :mod:`broker.cli._state`.

* ``add --client-id ID --spiffe-id SPIFFE_ID (--jwks-file PATH | --jwks-uri URL) [--alg ALG]...
  [--max-assertion-lifetime SECONDS]``: ``--jwks-file`` is a JWK Set (RFC 7517 §5) of public keys, stored inline;
  ``--jwks-uri`` an https URL the service fetches them from (RFC 7591 §2: one or the other, never both), under its
  server-side request guards. ``--alg`` defaults to ES256, the lifetime to 60 s (at most 300).
* ``list``, ``show CLIENT_ID``: a table, or the admin API's documents with ``--json``.
* ``disable CLIENT_ID``: its assertions are refused (``invalid_client``), the registration kept; ``enable``
  undoes it; ``remove`` forgets it.

Bad input is one line, ``Error: <code>: <what is wrong>``, exit 1 (a usage error, exit 2); a key file's content is
never quoted.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from broker._eventloop import run as run_event_loop
from broker.admin.adapters import RegistryClientAdmin
from broker.admin.client import AdminChange, AdminClient
from broker.admin.ports import ClientAdmin
from broker.admin.wire import client_document, clients_document
from broker.audit.trail import AuditTrail
from broker.cli._state import LocalTarget, RemoteTarget, iso, json_option, local_options, remote_options, with_store
from broker.cli.main import cli_errors
from broker.errors import ConfigError
from broker.jose.jwk import jwks_keys
from broker.store import Store
from broker.tokens.clients import (
    DEFAULT_ALGORITHMS,
    DEFAULT_MAX_ASSERTION_LIFETIME,
    MAX_INLINE_JWKS_BYTES,
    ClientRegistryStore,
    RegisteredClient,
)

__all__ = ["clients", "read_jwks_file"]

T = TypeVar("T")


def _targets(options: dict[str, Any]) -> tuple[LocalTarget, RemoteTarget | None]:
    local = LocalTarget(options["config_file"], options["state_dir"], options["store_url"])
    remote = RemoteTarget(
        options["admin_url"], options["server_id"], options["workload_api"], options["cert"], options["key"],
        tuple(options["bundle"]),
    )  # fmt: skip
    return local, (remote if remote.check(local) else None)


def registry_of(store: Store) -> ClientRegistryStore:
    """The store's client registry (``Store.clients``); tests replace this seam with a double."""
    return store.clients


def _run(options: dict[str, Any], remote_call: Callable[[AdminClient], Awaitable[T]],
         local_call: Callable[[ClientAdmin], Awaitable[T]]) -> T:  # fmt: skip
    """``remote_call`` on the admin API, or ``local_call`` on the store's registry (changes recorded there)."""
    local, remote = _targets(options)
    settings = local.settings()
    if remote is not None:

        async def ask() -> T:
            async with remote.client(settings) as admin:
                return await remote_call(admin)

        return run_event_loop(ask())

    async def use(store: Store) -> T:
        return await local_call(RegistryClientAdmin(registry_of(store), AuditTrail(store.audit)))

    return run_event_loop(with_store(settings.store_url(), use))


def read_jwks_file(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (at most :data:`MAX_INLINE_JWKS_BYTES`); never quotes the file's content."""
    with path.open("rb") as file:
        raw = file.read(MAX_INLINE_JWKS_BYTES + 1)
    if len(raw) > MAX_INLINE_JWKS_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_INLINE_JWKS_BYTES} bytes; a JWK Set of public keys is smaller")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ConfigError(f'{path}: not JSON; give a JWK Set (RFC 7517 §5), {{"keys": [...]}}') from None
    if not isinstance(document, dict):
        raise ConfigError(f'{path}: not a JWK Set; give a JSON object {{"keys": [...]}} of public keys')
    return document


# -- output ----------------------------------------------------------------------------------------------------


def _echo_json(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True))


def _keys(client: RegisteredClient) -> str:
    if client.jwks_uri is not None:
        return client.jwks_uri
    keys = jwks_keys(client.jwks) or []
    kids = [str(key.get("kid")) for key in keys if isinstance(key, dict) and key.get("kid") is not None]
    return f"inline: {len(keys)} key{'s' if len(keys) != 1 else ''}" + (f" ({', '.join(kids)})" if kids else "")


def _print_change(change: AdminChange[RegisteredClient], done: str, as_json: bool) -> None:
    client = change.result
    if as_json:
        _echo_json({**client_document(client), "audited": change.audited})
    else:
        click.echo(f"{done}: {client.client_id} (acts as {client.spiffe_id})")
    if not change.audited:
        click.echo("warning: the service made the change, but its audit journal did not record the outcome", err=True)


def _print_show(client: RegisteredClient, as_json: bool) -> None:
    if as_json:
        _echo_json(client_document(client))
        return
    rows = [
        ("client_id", client.client_id), ("spiffe_id", client.spiffe_id), ("keys", _keys(client)),
        ("algorithms", ", ".join(client.algorithms)),
        ("max_assertion_lifetime", f"{client.max_assertion_lifetime} s"),
        ("state", "disabled" if client.disabled else "enabled"),
        ("created_at", iso(client.created_at)), ("updated_at", iso(client.updated_at)),
    ]  # fmt: skip
    for name, value in rows:
        click.echo(f"{name + ':':<24}{value}")


def _print_list(found: Sequence[RegisteredClient], as_json: bool) -> None:
    if as_json:
        _echo_json(clients_document(list(found)))
        return
    if not found:
        click.echo("no client is registered")
        return
    rows = [("CLIENT_ID", "SPIFFE_ID", "STATE", "ALGORITHMS", "KEYS")]
    rows += [(c.client_id, c.spiffe_id, "disabled" if c.disabled else "enabled", ",".join(c.algorithms), _keys(c))
             for c in found]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[4]]))


# -- commands --------------------------------------------------------------------------------------------------


@click.group("clients", context_settings={"help_option_names": ["-h", "--help"]})
def clients() -> None:
    """Register clients that authenticate with a key pair (private_key_jwt, RFC 7523) and act as a SPIFFE ID."""


@clients.command("add")
@click.option("--client-id", required=True, help="the client's id (RFC 6749 §2.2), printable ASCII, no spaces")
@click.option("--spiffe-id", required=True, metavar="SPIFFE_ID", help="the identity it acts as (policy, sub)")
@click.option("--jwks-file", type=click.Path(dir_okay=False, path_type=Path), help="JWK Set of its public keys")
@click.option("--jwks-uri", metavar="URL", help="https URL the service fetches its public keys from")
@click.option(
    "--alg", "algorithms", multiple=True, metavar="ALG", help="assertion algorithm (repeatable)  [default: ES256]"
)
@click.option("--max-assertion-lifetime", type=int, default=DEFAULT_MAX_ASSERTION_LIFETIME, show_default=True,
              metavar="SECONDS", help="the longest exp - iat accepted (at most 300)")  # fmt: skip
@remote_options
@local_options
@json_option
@cli_errors()
def add_command(
    client_id: str,
    spiffe_id: str,
    jwks_file: Path | None,
    jwks_uri: str | None,
    algorithms: tuple[str, ...],
    max_assertion_lifetime: int,
    as_json: bool,
    **options: Any,
) -> None:
    """Register a client with its public keys (--jwks-file or --jwks-uri, exactly one)."""
    if (jwks_file is None) == (jwks_uri is None):
        raise click.UsageError("give exactly one of --jwks-file and --jwks-uri (RFC 7591 §2)")
    client = RegisteredClient(
        client_id=client_id,
        spiffe_id=spiffe_id,
        jwks=None if jwks_file is None else read_jwks_file(jwks_file),
        jwks_uri=jwks_uri,
        algorithms=algorithms or DEFAULT_ALGORITHMS,
        max_assertion_lifetime=max_assertion_lifetime,
    )

    async def local_add(admin: ClientAdmin) -> AdminChange[RegisteredClient]:
        return AdminChange(await admin.add_client(client, None), audited=True)

    change = _run(options, lambda admin: admin.add_client(client), local_add)
    _print_change(change, "registered", as_json)
    if not as_json:
        click.echo(f"  keys: {_keys(change.result)}; algorithms: {', '.join(change.result.algorithms)}; "
                   f"max assertion lifetime: {change.result.max_assertion_lifetime} s")  # fmt: skip


@clients.command("list")
@remote_options
@local_options
@json_option
@cli_errors()
def list_command(as_json: bool, **options: Any) -> None:
    """List the registered clients: id, SPIFFE ID, state, algorithms, keys."""
    _print_list(_run(options, lambda admin: admin.clients(), lambda admin: admin.list_clients()), as_json)


@clients.command("show")
@click.argument("client_id")
@remote_options
@local_options
@json_option
@cli_errors()
def show_command(client_id: str, as_json: bool, **options: Any) -> None:
    """Show one registered client."""
    _print_show(
        _run(options, lambda admin: admin.client(client_id), lambda admin: admin.get_client(client_id)), as_json
    )


def _change_command(name: str, done: str, summary: str) -> None:
    @clients.command(name, help=summary)
    @click.argument("client_id")
    @click.option("--reason", help="remote: why, for the service's audit record")
    @remote_options
    @local_options
    @json_option
    @cli_errors()
    def command(client_id: str, reason: str | None, as_json: bool, **options: Any) -> None:
        if reason is not None and options["admin_url"] is None:
            raise click.UsageError("--reason goes with --admin-url (the local record of the change has no reason)")

        async def remote(admin: AdminClient) -> AdminChange[RegisteredClient]:
            if name == "remove":
                return await admin.remove_client(client_id, reason=reason)
            return await admin.set_client_disabled(client_id, name == "disable", reason=reason)

        async def local(admin: ClientAdmin) -> AdminChange[RegisteredClient]:
            if name == "remove":
                return AdminChange(await admin.remove_client(client_id, None), audited=True)
            return AdminChange(await admin.set_disabled(client_id, name == "disable", None), audited=True)

        _print_change(_run(options, remote, local), done, as_json)


_change_command("disable", "disabled", "Refuse CLIENT_ID's assertions (invalid_client); keep its registration.")
_change_command("enable", "enabled", "Accept CLIENT_ID's assertions again.")
_change_command("remove", "removed", "Forget CLIENT_ID.")
