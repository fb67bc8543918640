"""``spiffe-broker keys list|rotate|revoke KID|rotate-kek|init-kek PATH``: the signing keyring, by hand.

``list``, ``rotate`` and ``revoke`` work remote (``--admin-url``: the running service's admin API, audited there
under the caller's SPIFFE ID) or local (the store directly; see :mod:`broker.cli._state`). ``rotate-kek`` is
local only: it needs the old and the new KEK, which never travel over the admin API. ``init-kek`` writes a new
KEK file and touches no store. Nothing prints key material or a KEK, only ``kid`` and ``kek_id``.

Local mode, what each command needs (issue 9 items 3 and 5; docs/operations.md, "Signing keys"):

* ``list`` reads the keyring's records: no KEK.
* ``rotate`` and ``revoke`` open the keyring with the KEK (they generate and seal a fresh key), on the schedule
  that ``[keyring]`` sets (``rotation_period``, ``jwks_max_age``, ``leeway``: use the servers' config, since a
  manual rotation keeps the overlap rule's "published before it signs" half). The schedule's longest token
  lifetime only times retirements, which neither command makes (the services' housekeeping does), so it is
  :data:`~broker.tokens.policy.MAX_TOKEN_LIFETIME`, the most any policy allows. An empty store is refused: the
  token service makes the first keys.
* ``revoke`` first publishes the kid on the revocation feed (``KeyRevoked``, kept until no token it signed can be
  valid; issue 10 item 5), then revokes it, as the admin API does (:class:`~broker.admin.adapters.KeyringAdmin`).
  It prints the blast radius from the issuance ledger (tokens of the last batch window before a crash
  may be missing from it: docs/operations.md, "The ledger and its crash window").
* ``rotate-kek`` belongs to step 3 of docs/operations.md, "KEK rotation": every replica must already run with the
  new KEK as ``kek_file`` and the old one among ``previous_kek_files`` (they re-read the keys every second). It
  first checks that every key unwraps, so a missing old KEK changes nothing.
* Each change is audited from here (``key.rotated`` with reason ``manual``, ``key.revoked`` with the live
  tokens, ``key.kek_rotated``); running services pick the change up through the store's change events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from broker._eventloop import run as run_event_loop
from broker._sealing import KekRing, generate_kek_file
from broker.admin.adapters import blast_radius_view
from broker.admin.ports import BlastRadius, KeyInfo, KeyRevocation, KeyRotation
from broker.admin.wire import keys_document, revocation_document, rotation_document
from broker.audit.events import KekRotated, KeyRevoked, KeyRotated
from broker.audit.trail import AuditTrail
from broker.cli._state import (
    LocalTarget,
    RemoteTarget,
    iso,
    json_option,
    kek_options,
    local_options,
    record_change,
    remote_options,
    with_store,
)
from broker.cli.main import cli_errors
from broker.config import BrokerSettings
from broker.errors import KeyringError, SealingError
from broker.server.stateful import load_keks
from broker.store import Store
from broker.store.apikey_rewrap import rewrap_apikey_versions
from broker.tokens.keyring import LIVE, KekRotation, Keyring, rotate_kek
from broker.tokens.keystore import KeyState
from broker.tokens.ledger import BlastRadius as LedgerBlastRadius
from broker.tokens.policy import MAX_TOKEN_LIFETIME
from broker.tokens.quarantine import Quarantines
from broker.tokens.rotation import RotationSchedule
from broker.tokens.sealed_keys import key_aad

__all__ = ["keys"]


@dataclass(frozen=True, slots=True)
class Rotated:
    rotation: KeyRotation
    audited: bool


@dataclass(frozen=True, slots=True)
class Revoked:
    """A revoke's outcome; ``was``, ``next_kid`` and ``unlisted_subjects`` are known in local mode only."""

    revocation: KeyRevocation
    audited: bool
    was: KeyState | None = None
    next_kid: str | None = None
    radius_error: str | None = None  # the ledger did not answer: the blast radius is unknown, not zero
    unlisted_subjects: int = 0


def _targets(options: dict[str, Any]) -> tuple[LocalTarget, RemoteTarget | None]:
    local = LocalTarget(
        options["config_file"],
        options["state_dir"],
        options["store_url"],
        options.get("kek_file"),
        tuple(options.get("previous_kek_files", ())),
    )
    remote = RemoteTarget(
        options["admin_url"], options["server_id"], options["workload_api"], options["cert"], options["key"],
        tuple(options["bundle"]),
    )  # fmt: skip
    return local, (remote if remote.check(local) else None)


# -- local mode ------------------------------------------------------------------------------------------------


def _schedule(settings: BrokerSettings) -> RotationSchedule:
    keyring = settings.keyring
    return RotationSchedule(
        period=keyring.rotation_period,
        jwks_max_age=keyring.jwks_max_age,
        max_token_lifetime=MAX_TOKEN_LIFETIME,
        leeway=keyring.leeway,
    )


@dataclass(frozen=True, slots=True)
class _Sealing:
    """What a local change that seals a fresh key needs, loaded before the store is opened."""

    keks: KekRing
    schedule: RotationSchedule

    @classmethod
    def load(cls, settings: BrokerSettings) -> _Sealing:
        return cls(load_keks(settings), _schedule(settings))

    async def keyring(self, store: Store) -> Keyring:
        """The keyring over ``store`` (a KEK that does not open its keys is refused; nothing is written)."""
        if not await store.keyring.keys():
            raise KeyringError("the store holds no signing keys yet: start the token service once (it makes them)")
        return await Keyring.open(store.keyring, self.keks, self.schedule, time.time, blast_radius=store.ledger)


async def _local_list(store: Store) -> list[KeyInfo]:
    return [
        KeyInfo(r.kid, r.algorithm, r.state, r.kek_id, r.created_at, r.activated_at, r.retiring_at, r.retired_at)
        for r in await store.keyring.keys()
    ]


async def _local_rotate(store: Store, sealing: _Sealing) -> Rotated:
    rotation = await (await sealing.keyring(store)).rotate()
    event = KeyRotated(
        activated=rotation.active_kid, retiring=rotation.previous_kid, next=rotation.next_kid, reason="manual"
    )
    await record_change(store, event, f"keys rotated ({rotation.active_kid} signs now)")
    return Rotated(KeyRotation(rotation.active_kid, rotation.previous_kid, rotation.next_kid), audited=True)


async def _local_revoke(store: Store, sealing: _Sealing, kid: str) -> Revoked:
    keyring = await sealing.keyring(store)
    if any(view.kid == kid and view.state in LIVE for view in keyring.views()):  # on the feed first (KeyringAdmin)
        window = sealing.schedule.retire_after
        feed = Quarantines(store.revocations, store.ledger, AuditTrail(store.audit), window=lambda: window,
                           clock=time.time)  # fmt: skip
        await feed.publish_key_revocation(kid, grace=timedelta(seconds=keyring.max_unconfirmed))
    revocation = await keyring.revoke(kid)
    found = revocation.blast_radius if isinstance(revocation.blast_radius, LedgerBlastRadius) else None
    activated = revocation.active_kid if revocation.was is KeyState.ACTIVE else None
    event = KeyRevoked(kid=kid, activated=activated, live_tokens=found.live_tokens if found else None)
    await record_change(store, event, f"key {kid} revoked")
    radius = blast_radius_view(found, revocation.blast_radius_error)
    unlisted = found.distinct_subjects - len(found.subjects) if found else 0
    return Revoked(
        KeyRevocation(kid, revocation.active_kid, radius),
        audited=True,
        was=revocation.was,
        next_kid=revocation.next_kid,
        radius_error=revocation.blast_radius_error if found is None else None,
        unlisted_subjects=max(unlisted, 0),
    )


# -- output ----------------------------------------------------------------------------------------------------


def _echo_json(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True))


def _warn_unaudited(audited: bool) -> None:
    if not audited:
        click.echo("warning: the service made the change, but its audit journal did not record the outcome", err=True)


def _print_keys(infos: Sequence[KeyInfo], as_json: bool) -> None:
    if as_json:
        _echo_json(keys_document(list(infos)))
        return
    if not infos:
        click.echo("the store holds no signing keys (the token service makes them at its first start)")
        return
    rows = [("KID", "STATE", "ALG", "KEK", "CREATED", "ACTIVATED", "RETIRING", "RETIRED")]
    rows += [
        (k.kid, str(k.state), k.algorithm, k.kek_id, iso(k.created_at), iso(k.activated_at), iso(k.retiring_at),
         iso(k.retired_at))
        for k in infos
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _print_rotated(rotated: Rotated, as_json: bool) -> None:
    rotation = rotated.rotation
    if as_json:
        _echo_json({**rotation_document(rotation), "audited": rotated.audited})
    else:
        click.echo(f"active:   {rotation.active_kid} (signing now)")
        click.echo(f"retiring: {rotation.previous_kid or '-'} (published until its tokens have expired)")
        click.echo(f"next:     {rotation.next_kid or '(an existing next key)'}")
    _warn_unaudited(rotated.audited)


def _radius_lines(kid: str, radius: BlastRadius, unlisted: int) -> list[str]:
    head = "blast radius (issuance ledger; a crash loses at most its last batch window):"
    if radius.live_tokens is None:
        return [head, f"  unknown: {radius.error}"]
    if radius.live_tokens == 0:
        return [head, f"  live tokens: 0 (the ledger holds no unexpired token signed by {kid})"]
    width = max(len(str(s.tokens)) for s in radius.subjects) if radius.subjects else 1
    lines = [head, f"  live tokens: {radius.live_tokens}"]
    lines.append(f"  valid until: {iso(radius.valid_until)} (no token signed by {kid} is valid after it)")
    lines.append("  subjects:")
    lines += [f"    {str(s.tokens).rjust(width)}  {s.spiffe_id}" for s in radius.subjects]
    lines += [f"    (and {unlisted} more)"] if unlisted else []
    lines.append("  audiences:")
    lines += [f"    {audience}" for audience in radius.audiences]
    return lines


def _print_revoked(revoked: Revoked, as_json: bool) -> None:
    revocation = revoked.revocation
    if as_json:
        document = {**revocation_document(revocation), "audited": revoked.audited}
        if revoked.was is not None:
            document |= {"was": str(revoked.was), "next_kid": revoked.next_kid}
        if revoked.radius_error is not None:
            document |= {"blast_radius": None, "blast_radius_error": revoked.radius_error}
        elif revoked.unlisted_subjects:
            document["blast_radius"]["unlisted_subjects"] = revoked.unlisted_subjects
        _echo_json(document)
    else:
        was = f" (was {revoked.was})" if revoked.was is not None else ""
        click.echo(f"revoked: {revocation.revoked_kid}{was}: out of the JWKS, signs nothing")
        click.echo(f"active:  {revocation.active_kid} (signing now)")
        if revoked.next_kid is not None:
            click.echo(f"next:    {revoked.next_kid} (published)")
        if revoked.radius_error is None:
            click.echo(
                "\n".join(_radius_lines(revocation.revoked_kid, revocation.blast_radius, revoked.unlisted_subjects))
            )
    if revoked.radius_error is not None:
        click.echo(
            f"warning: blast radius unknown, the issuance ledger did not answer: {revoked.radius_error}", err=True
        )
    _warn_unaudited(revoked.audited)


# -- commands --------------------------------------------------------------------------------------------------


class KidFirstCommand(click.Command):
    """A command whose first argument is a kid: an RFC 7638 thumbprint in base64url, which may begin with ``-``.

    A first argument that begins with ``-`` and names none of the command's options is the kid (it is moved behind
    ``--``), so ``keys revoke -Xy3...`` revokes that key instead of failing on an unknown option.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        names = {name for param in self.get_params(ctx) for name in (*param.opts, *param.secondary_opts)}
        first = args[0] if args else ""
        if first.startswith("-") and first != "--" and first.partition("=")[0] not in names:
            args = [*args[1:], "--", first]
        return super().parse_args(ctx, args)


@click.group("keys", context_settings={"help_option_names": ["-h", "--help"]})
def keys() -> None:
    """The signing keyring: list, rotate, revoke (emergency), and the key-encryption key (KEK)."""


@keys.command("list")
@remote_options
@local_options
@json_option
@cli_errors()
def list_command(as_json: bool, **options: Any) -> None:
    """List every signing key: kid, state, algorithm, KEK id and times (never key material)."""
    local, remote = _targets(options)
    settings = local.settings()
    if remote is not None:

        async def ask() -> list[KeyInfo]:
            async with remote.client(settings) as admin:
                return await admin.list_keys()

        infos = run_event_loop(ask())
    else:
        infos = run_event_loop(with_store(settings.store_url(), _local_list))
    _print_keys(infos, as_json)


@keys.command("rotate")
@remote_options
@local_options
@kek_options
@click.option("--reason", help="remote: why, for the service's audit record")
@json_option
@cli_errors()
def rotate_command(as_json: bool, reason: str | None, **options: Any) -> None:
    """Rotate now: next key -> active, active -> retiring, a fresh next key (keeps the overlap rule)."""
    local, remote = _targets(options)
    if reason is not None and remote is None:
        raise click.UsageError("--reason goes with --admin-url (the local key.rotated record has reason 'manual')")
    settings = local.settings()
    if remote is not None:

        async def ask() -> Rotated:
            async with remote.client(settings) as admin:
                change = await admin.rotate(reason=reason)
                return Rotated(change.result, change.audited)

        rotated = run_event_loop(ask())
    else:
        sealing = _Sealing.load(settings)
        rotated = run_event_loop(with_store(settings.store_url(), lambda store: _local_rotate(store, sealing)))
    _print_rotated(rotated, as_json)


@keys.command("revoke", cls=KidFirstCommand)
@click.argument("kid")
@remote_options
@local_options
@kek_options
@click.option("--reason", help="remote: why, for the service's audit record")
@json_option
@cli_errors()
def revoke_command(kid: str, as_json: bool, reason: str | None, **options: Any) -> None:
    """Revoke KID now (suspected compromise): out of every JWKS, a fresh key signs; prints the blast radius."""
    local, remote = _targets(options)
    if reason is not None and remote is None:
        raise click.UsageError("--reason goes with --admin-url (the local key.revoked record has no reason)")
    settings = local.settings()
    if remote is not None:

        async def ask() -> Revoked:
            async with remote.client(settings) as admin:
                change = await admin.revoke(kid, reason=reason)
                return Revoked(change.result, change.audited)

        revoked = run_event_loop(ask())
    else:
        sealing = _Sealing.load(settings)
        revoked = run_event_loop(with_store(settings.store_url(), lambda store: _local_revoke(store, sealing, kid)))
    _print_revoked(revoked, as_json)


async def _rotate_kek(store: Store, keks: KekRing) -> tuple[KekRotation, int, int]:
    """Check that every key unwraps (nothing written otherwise), then re-wrap those under an older KEK, and the
    API-key exceptions' secret versions with them (:func:`~broker.store.apikey_rewrap.rewrap_apikey_versions`
    opens every one before it writes any)."""
    records = await store.keyring.keys()
    older = [r for r in records if r.kek_id != keks.primary.kek_id]
    for record in older:
        try:
            keks.rewrap(record.wrapped_key, key_aad(record.kid, record.algorithm), record.kek_id)
        except SealingError as exc:
            raise SealingError(
                f"signing key {record.kid}: {exc.description}; for rotate-kek give the new KEK as --kek-file and "
                "each old one as --previous-kek-file; nothing was changed"
            ) from None
    secrets = await rewrap_apikey_versions(store.apikeys, keks)
    result = await rotate_kek(store.keyring, keks)
    if result.rewrapped or secrets:
        old = ",".join(sorted({r.kek_id for r in older if r.kid in result.rewrapped})) or "-"
        event = KekRotated(old_kek_id=old, new_kek_id=result.kek_id, keys=len(result.rewrapped))
        what = f"{len(result.rewrapped)} signing keys and {secrets} API-key secret versions re-wrapped"
        await record_change(store, event, f"{what} under {result.kek_id}")
    return result, len(records), secrets


@keys.command("rotate-kek")
@local_options
@kek_options
@cli_errors()
def rotate_kek_command(**options: Any) -> None:
    """Re-wrap every key under --kek-file, opening them with --previous-kek-file (local only; idempotent)."""
    local = LocalTarget(options["config_file"], options["state_dir"], options["store_url"], options["kek_file"],
                        tuple(options["previous_kek_files"]))  # fmt: skip
    settings = local.settings()
    keks = load_keks(settings)
    result, total, secrets = run_event_loop(with_store(settings.store_url(), lambda store: _rotate_kek(store, keks)))
    if secrets:
        click.echo(f"re-wrapped {secrets} API-key secret versions under KEK {keks.primary.kek_id}")
    if not total:
        click.echo("the store holds no signing keys: nothing to re-wrap")
    elif result.rewrapped:
        click.echo(f"re-wrapped {len(result.rewrapped)} of {total} signing keys under KEK {result.kek_id}")
        click.echo("drop the old KEK from previous_kek_files once no replica needs it (docs/operations.md, step 4)")
    else:
        click.echo(f"nothing to re-wrap: all {total} signing keys are wrapped by KEK {result.kek_id}")


@keys.command("init-kek")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@cli_errors()
def init_kek_command(path: Path) -> None:
    """Write a new random 256-bit key-encryption key to PATH (mode 0600); never overwrites a file."""
    kek = generate_kek_file(path)
    click.echo(f"wrote KEK {kek.kek_id} to {path} (mode 0600)")
    click.echo("use it as [keyring] kek_file (--kek-file); keep a copy offline, apart from the store's backups")
