"""``spiffe-broker workload-api``: the embedded dev SPIFFE Workload API on a Unix socket.

Runs until SIGINT or SIGTERM, then closes every stream and removes the socket. The CA keys and the entries file
persist in ``--state-dir`` (0700, files 0600); ``--register-uid UID --spiffe-id ID`` adds (or replaces) the entry
``ID <- unix:uid:UID`` in the entries file before serving.
"""

from __future__ import annotations

from pathlib import Path

import click

from broker._eventloop import run as run_event_loop
from broker.cli.main import cli_errors
from broker.devtools.workload_api.entries import RegistrationEntry
from broker.devtools.workload_api.server import WorkloadApiServer, serve_until_signalled
from broker.devtools.workload_api.statedir import open_dev_state
from broker.errors import ConfigError
from broker.identity.errors import InvalidSpiffeIdError
from broker.identity.spiffeid import TrustDomain


def _trust_domain(ctx: click.Context, param: click.Parameter, value: str) -> TrustDomain:
    try:
        return TrustDomain.parse(value)
    except InvalidSpiffeIdError as exc:
        raise click.BadParameter(exc.description) from None


@click.command("workload-api")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Unix socket to listen on; clients use unix://PATH.",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory for the CA keys and the default entries file (made 0700).",
)
@click.option("--trust-domain", callback=_trust_domain, required=True, help="Trust domain, e.g. example.org.")
@click.option(
    "--entries",
    "entries_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Registration entries YAML, which must exist unless --register-uid writes it (default: "
    "STATE_DIR/entries.yaml); re-read when it changes.",
)
@click.option(
    "--x509-ttl",
    type=click.FloatRange(min=1.0),
    default=3600.0,
    show_default=True,
    help="X.509-SVID lifetime in seconds for entries that set none; rotated at half-life.",
)
@click.option(
    "--register-uid",
    type=click.IntRange(0, 2**32 - 1),
    default=None,
    help="Register --spiffe-id for this uid in the entries file before serving.",
)
@click.option("--spiffe-id", default=None, help="SPIFFE ID to register for --register-uid.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="serve Prometheus /metrics on 127.0.0.1:PORT")
@cli_errors()
def workload_api(
    socket_path: Path,
    state_dir: Path,
    trust_domain: TrustDomain,
    entries_path: Path | None,
    x509_ttl: float,
    register_uid: int | None,
    spiffe_id: str | None,
    metrics_port: int | None,
) -> None:
    """Serve the SPIFFE Workload API (dev CA, unix:uid/gid attestation) until SIGINT/SIGTERM."""
    if (register_uid is None) != (spiffe_id is None):
        raise click.UsageError("--register-uid and --spiffe-id go together")
    if entries_path is not None and register_uid is None and not entries_path.is_file():
        raise ConfigError(
            f"--entries {entries_path}: no such file; create it (entries: [...]) or leave --entries out"
            " to use STATE_DIR/entries.yaml"
        )
    ca, store = open_dev_state(state_dir, trust_domain, entries_path=entries_path)
    if register_uid is not None and spiffe_id is not None:
        entry = RegistrationEntry.of(spiffe_id, [f"unix:uid:{register_uid}"])
        if not entry.spiffe_id.is_member_of(trust_domain):
            raise click.BadParameter(f"not in trust domain {trust_domain}", param_hint="--spiffe-id")
        store.upsert(entry)
    server = WorkloadApiServer(ca=ca, entries=store, socket_path=socket_path, default_x509_ttl=x509_ttl)
    run_event_loop(serve_until_signalled(server, metrics_port=metrics_port))


__all__ = ["workload_api"]
