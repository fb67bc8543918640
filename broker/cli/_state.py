"""What the ``keys`` and ``store`` commands share: where the state is, and how to reach it.

Two ways to reach the broker's state (issue 9, item 5):

* **remote** (``--admin-url https://host:port``): the running token service's admin API (``/admin/v1``), over
  mTLS with the caller's X.509-SVID, from the Workload API (``--workload-api``, ``[workload_api] socket`` or
  ``$SPIFFE_ENDPOINT_SOCKET``) or from files (``--cert``/``--key``/``--bundle``, as ``spiffe-broker server``
  takes them). ``--server-id`` is required and pins the service's SPIFFE ID: an emergency ``keys revoke`` is
  exactly when a compromised workload might answer in the service's place. The service audits the call under
  the caller's SPIFFE ID.
* **local**: the store itself (``--store URL``, else ``[store] url``, else ``sqlite:///<state-dir>/broker.db``),
  for a node without a running service. It is opened without migrating it (a schema behind this binary is
  refused with the command that migrates it). Changes that seal a key need the KEK (``--kek-file`` or
  ``[keyring] kek_file`` or ``$SPIFFE_BROKER_KEK``; ``--previous-kek-file`` for older ones). Running services
  follow a local change through the store's ``keyring`` change events; the command itself writes the audit
  record (actor: none, the local CLI).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from broker.admin.client import AdminClient
from broker.audit.events import AuditEvent
from broker.audit.trail import AuditTrail
from broker.cli.server import _file_source
from broker.config import BrokerSettings, load_settings, workload_api_address
from broker.errors import BrokerError
from broker.identity.source import SvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.connector import ServerIdentityError
from broker.identity.spiffetls.context import client_ssl_context
from broker.identity.workloadapi.source import WorkloadApiSvidSource
from broker.store import Store, open_store

__all__ = [
    "LocalTarget",
    "RemoteTarget",
    "iso",
    "json_option",
    "kek_options",
    "local_options",
    "record_change",
    "remote_options",
    "with_store",
]

T = TypeVar("T")
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
READY_TIMEOUT = 30.0  # seconds to wait for the caller's first X.509-SVID


def _stack(*decorators: Decorator) -> Decorator:
    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


_PATH = click.Path(dir_okay=False, path_type=Path)

local_options = _stack(
    click.option("--config", "config_file", type=_PATH, help="TOML config file"),
    click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="local: state directory holding broker.db  [default: .spiffe-broker]",
    ),
    click.option(
        "--store",
        "store_url",
        metavar="URL",
        help="local: store URL, sqlite:///path or postgresql://...  [default: [store] url, else <state-dir>/broker.db]",
    ),
)
kek_options = _stack(
    click.option(
        "--kek-file",
        type=_PATH,
        help="key-encryption key file  [default: [keyring] kek_file, else $SPIFFE_BROKER_KEK]",
    ),
    click.option(
        "--previous-kek-file",
        "previous_kek_files",
        type=_PATH,
        multiple=True,
        help="an older KEK, accepted for unwrapping only (repeatable)  [default: [keyring] previous_kek_files]",
    ),
)
remote_options = _stack(
    click.option("--admin-url", metavar="URL", help="remote: the token service, https://host:port (its admin API)"),
    click.option(
        "--server-id", metavar="SPIFFE_ID", help="remote: the token service's SPIFFE ID (required with --admin-url)"
    ),
    click.option("--workload-api", help="remote: Workload API address  [default: $SPIFFE_ENDPOINT_SOCKET]"),
    click.option("--cert", type=_PATH, help="remote: X509-SVID chain PEM (instead of --workload-api)"),
    click.option("--key", type=_PATH, help="remote: private key PEM for --cert"),
    click.option("--bundle", multiple=True, help="remote: [TRUST_DOMAIN=]PEM roots for --cert (repeatable)"),
)
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")


@dataclass(frozen=True, slots=True)
class LocalTarget:
    """The local store and KEK options, as given."""

    config_file: Path | None = None
    state_dir: Path | None = None
    store_url: str | None = None
    kek_file: Path | None = None
    previous_kek_files: tuple[Path, ...] = ()

    def given(self) -> list[str]:
        """The local-only flags given (those that make no sense with ``--admin-url``)."""
        flags = (("--state-dir", self.state_dir), ("--store", self.store_url), ("--kek-file", self.kek_file))
        named = [flag for flag, value in flags if value is not None]
        return named + (["--previous-kek-file"] if self.previous_kek_files else [])

    def settings(self) -> BrokerSettings:
        overrides: dict[str, Any] = {}
        if self.state_dir is not None:
            overrides["state_dir"] = self.state_dir
        if self.store_url is not None:
            overrides["store"] = {"url": self.store_url}
        keyring: dict[str, Any] = {}
        if self.kek_file is not None:
            keyring["kek_file"] = self.kek_file
        if self.previous_kek_files:
            keyring["previous_kek_files"] = list(self.previous_kek_files)
        if keyring:
            overrides["keyring"] = keyring
        return load_settings(self.config_file, overrides)


@dataclass(frozen=True, slots=True)
class RemoteTarget:
    """The admin API and the caller's identity, as given; :meth:`check` refuses contradictory flags."""

    admin_url: str | None = None
    server_id: str | None = None
    workload_api: str | None = None
    cert: Path | None = None
    key: Path | None = None
    bundles: tuple[str, ...] = ()

    def check(self, local: LocalTarget) -> bool:
        """True for remote mode (``--admin-url``); a usage error for flags of the other mode or a half pair."""
        identity = [f for f, v in (("--server-id", self.server_id), ("--workload-api", self.workload_api),
                                   ("--cert", self.cert), ("--key", self.key)) if v is not None]  # fmt: skip
        identity += ["--bundle"] if self.bundles else []
        if self.admin_url is None:
            if identity:
                raise click.UsageError(f"{', '.join(identity)} go with --admin-url (the running service's admin API)")
            return False
        if local.given():
            raise click.UsageError(
                f"--admin-url reaches the running service; {', '.join(local.given())} are for local mode: use one"
            )
        if self.server_id is None:
            raise click.UsageError(
                "--admin-url needs --server-id SPIFFE_ID, the token service's own SPIFFE ID (the admin API must not "
                "be answered by any other workload of a trusted trust domain)"
            )
        if not self.admin_url.startswith("https://"):
            raise click.BadParameter("the admin API is served over mTLS: https://host:port", param_hint="--admin-url")
        if (self.cert is None) != (self.key is None):
            raise click.UsageError("--cert and --key go together")
        if self.cert is not None and self.workload_api is not None:
            raise click.UsageError("use either --workload-api or --cert/--key, not both")
        return True

    def _source(self, settings: BrokerSettings) -> SvidSource:
        if self.cert is not None and self.key is not None:
            return _file_source(self.cert, self.key, self.bundles, ())
        configured = self.workload_api or (str(settings.workload_api.socket) if settings.workload_api.socket else None)
        return WorkloadApiSvidSource(address=workload_api_address(configured))

    @contextlib.asynccontextmanager
    async def client(self, settings: BrokerSettings) -> AsyncIterator[AdminClient]:
        """An :class:`AdminClient` presenting the caller's X.509-SVID; everything is closed on the way out."""
        assert self.admin_url is not None
        server_id = SpiffeId.parse(self.server_id) if self.server_id else None
        source = self._source(settings)
        try:
            await source.wait_ready(READY_TIMEOUT)
            context = client_ssl_context(source, server_id=server_id)
            try:
                async with AdminClient(self.admin_url, context) as admin:
                    yield admin
            except ServerIdentityError as exc:
                expected = f"--server-id {server_id}" if server_id else "an ID of a trusted trust domain"
                raise ServerIdentityError(
                    f"{exc.description}, not {expected}: nothing was sent; check --admin-url and --server-id"
                ) from None
            finally:
                context.detach()
        finally:
            await source.aclose()


async def with_store(url: str, use: Callable[[Store], Awaitable[T]]) -> T:
    """Open ``url`` without migrating it, run ``use``, close."""
    store = await open_store(url, migrate=False)
    try:
        return await use(store)
    finally:
        await store.close()


async def record_change(store: Store, event: AuditEvent, done: str) -> None:
    """Append the audit record of a change already made; if the journal refuses it, say what was done anyway."""
    try:
        await AuditTrail(store.audit).record_now(event)
    except Exception as exc:  # the change is committed: whatever failed, the operator must learn both facts
        why = (exc.detail or exc.error) if isinstance(exc, BrokerError) else type(exc).__name__
        raise click.ClickException(
            f"{done}, but the audit journal did not take its {event.event} record ({why}): "
            "the change stands; note it in your incident log and check the store"
        ) from None


def iso(at: datetime | None) -> str:
    """RFC 3339 in UTC to the second, or ``-``."""
    if at is None:
        return "-"
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
