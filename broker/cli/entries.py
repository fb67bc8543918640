"""``spiffe-broker entries plan|apply|export``: SPIRE registration entries and broker policy from one file.

Failures (a bad file, an unreachable or refusing SPIRE Server, an unwritable output) propagate to the
command group's one error seam (:func:`broker.cli.main.cli_errors`), which prints one ``Error:`` line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from broker.registration import (
    EntryClient,
    Plan,
    apply,
    export_cluster_spiffe_ids,
    export_policy,
    load_workloads,
    plan,
    render_plan,
)
from broker.registration.export import is_class_name

DEFAULT_SERVER_SOCKET = "/tmp/spire-server/private/api.sock"  # noqa: S108 - SPIRE's own default

_file_argument = click.argument("workloads_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
_socket_option = click.option(
    "--server-socket",
    envvar="SPIRE_SERVER_ADMIN_SOCKET",
    default=DEFAULT_SERVER_SOCKET,
    show_default=True,
    help="spire-server's admin API Unix socket.",
)


def _echo_plan(changes: Plan) -> None:
    """The plan on stdout; its warnings (parents no agent has) also on stderr, where CI logs show them."""
    click.echo(render_plan(changes))
    for warning in changes.warnings:
        click.echo(f"warning: {warning}", err=True)


@click.group()
def entries() -> None:
    """Register SPIRE entries and broker policy from one declarative file."""


@entries.command("plan")
@_file_argument
@_socket_option
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes (as terraform plan).")
def plan_command(workloads_file: Path, server_socket: str, detailed_exitcode: bool) -> None:
    """Print what `apply` would create, update and delete on the SPIRE server."""
    desired = load_workloads(workloads_file)
    with EntryClient(server_socket) as server:
        changes = plan(desired, server)
    _echo_plan(changes)
    if detailed_exitcode and changes.has_changes:
        sys.exit(2)


@entries.command("apply")
@_file_argument
@_socket_option
def apply_command(workloads_file: Path, server_socket: str) -> None:
    """Create, update and delete the managed SPIRE entries so the server matches the file."""
    desired = load_workloads(workloads_file)
    with EntryClient(server_socket) as server:
        changes = plan(desired, server)
        _echo_plan(changes)
        if not changes.has_changes:
            return
        result = apply(changes, server)
    click.echo(f"applied: {len(result.created)} created, {len(result.updated)} updated, {len(result.deleted)} deleted")


def _class_name(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not is_class_name(value):
        raise click.BadParameter("must be empty or lowercase letters, digits, '-' and '.' (as Helm names)")
    return value


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path``; ``-`` is stdout."""
    if str(path) == "-":
        click.echo(text, nl=False)
    else:
        path.write_text(text)


@entries.command("export")
@_file_argument
@click.option("--policy", "policy_out", type=click.Path(dir_okay=False, path_type=Path), help="Write broker policy.")
@click.option("--k8s", "k8s_out", type=click.Path(dir_okay=False, path_type=Path), help="Write ClusterSPIFFEIDs.")
@click.option(
    "--k8s-class-name",
    callback=_class_name,
    help="ClusterSPIFFEID spec.className: the className of the spire-controller-manager that should act on them "
    "(default: the file's kubernetes.class_name, else spire-mgmt-spire, the hardened Helm chart's for release "
    "'spire' in namespace 'spire-mgmt'). '' writes classless resources (the controller needs watchClassless).",
)
def export_command(
    workloads_file: Path, policy_out: Path | None, k8s_out: Path | None, k8s_class_name: str | None
) -> None:
    """Write the broker policy file and/or ClusterSPIFFEID resources (stdout when no file is named, or '-')."""
    desired = load_workloads(workloads_file)
    if policy_out is None and k8s_out is None:
        click.echo(export_policy(desired), nl=False)
        return
    if policy_out is not None:
        _write(policy_out, export_policy(desired))
    if k8s_out is not None:
        _write(k8s_out, export_cluster_spiffe_ids(desired, class_name=k8s_class_name))
