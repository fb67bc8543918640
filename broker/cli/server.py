"""``spiffe-broker server``: the token service over TLS with the broker's own X.509-SVID.

Identity comes from the Workload API (``--workload-api`` or ``SPIFFE_ENDPOINT_SOCKET``) or, as the alternative,
from files (``--cert``/``--key`` plus ``--bundle`` and ``--jwt-bundle``). Stops cleanly on SIGINT/SIGTERM at once
in every phase, including while it waits for its first SVID (handlers are installed before anything waits, so a
process started with SIGINT ignored, as a background job or PID 1 in a container is, still honours it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from pathlib import Path
from typing import Any

import click
from cryptography import x509

from broker._eventloop import run as run_event_loop
from broker.cli._signals import Stopped, stop_on_signals, until_stopped
from broker.config import BrokerSettings, load_settings, workload_api_address
from broker.errors import BrokerError, ConfigError
from broker.identity.files import FileSvidSource, SvidFiles
from broker.identity.source import SvidSource
from broker.identity.spiffeid import TrustDomain
from broker.identity.workloadapi.source import WorkloadApiSvidSource
from broker.identity.x509svid import spiffe_id_from_certificate
from broker.server.stateful_service import start_stateful_token_service
from broker.tokens.policy import FilePolicyStore

__all__ = ["parse_listen", "server"]

log = logging.getLogger(__name__)

_LISTEN = re.compile(r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})")
_TD_PATH = re.compile(r"(?P<td>[a-z0-9._-]+)=(?P<path>.+)")
READY_TIMEOUT = 30.0


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT``."""
    match = _LISTEN.fullmatch(value)
    if match is None or not 0 <= int(match["port"]) <= 65535:
        raise ConfigError(f"--listen {value!r} is not HOST:PORT")
    return match["v6"] or match["host"], int(match["port"])


def _bundle_map(values: tuple[str, ...], default_td: TrustDomain | None, option: str) -> dict[TrustDomain, Path]:
    result: dict[TrustDomain, Path] = {}
    for value in values:
        match = _TD_PATH.fullmatch(value)
        if match is not None:
            result[TrustDomain.parse(match["td"])] = Path(match["path"])
        elif default_td is not None:
            result[default_td] = Path(value)
        else:
            raise ConfigError(f"{option} {value!r}: use TRUST_DOMAIN=PATH")
    return result


def _file_source(cert: Path, key: Path, bundles: tuple[str, ...], jwt_bundles: tuple[str, ...]) -> FileSvidSource:
    try:
        own_td = spiffe_id_from_certificate(x509.load_pem_x509_certificates(cert.read_bytes())[0]).trust_domain
    except (OSError, ValueError, IndexError, BrokerError):
        raise ConfigError(f"{cert}: not a PEM X509-SVID") from None
    files = SvidFiles(
        cert=cert,
        key=key,
        x509_bundles=_bundle_map(bundles, own_td, "--bundle"),
        jwt_bundles=_bundle_map(jwt_bundles, own_td, "--jwt-bundle"),
    )
    return FileSvidSource(files)


async def _serve(
    settings: BrokerSettings, source: SvidSource, *, issuer: str, policy: Path, stop: asyncio.Event
) -> None:
    policy_store = FilePolicyStore(policy)
    watcher = asyncio.create_task(source.watch()) if isinstance(source, FileSvidSource) else None
    service = await start_stateful_token_service(
        settings,
        source=source,
        policy_store=policy_store,
        listen_host=settings.server.host,
        listen_port=settings.server.port,
        issuer=issuer,
        health_port=settings.server.health_port,
        legacy_dir=settings.state_dir,
    )
    try:
        await stop.wait()
        log.info("stopping token service")
    finally:
        await service.aclose()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _run(settings: BrokerSettings, files: tuple[Any, ...] | None, workload_api: str | None) -> None:
    with stop_on_signals() as stop:  # first: a signal during any later phase stops at once
        server = settings.server
        if server.policy is None:
            raise ConfigError("no policy file: pass --policy")
        issuer = server.issuer or _default_issuer(server.host, server.port)
        if files is not None:
            source: SvidSource = _file_source(*files)
        else:
            configured = workload_api or (str(settings.workload_api.socket) if settings.workload_api.socket else None)
            address = workload_api_address(configured)
            source = WorkloadApiSvidSource(address=address)
        try:
            await until_stopped(stop, source.wait_ready(READY_TIMEOUT))
            await _serve(settings, source, issuer=issuer, policy=server.policy, stop=stop)
        except Stopped:
            log.info("stopped before the first SVID arrived")
        finally:
            await source.aclose()


def _default_issuer(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 (only compared, never bound here)
        raise ConfigError("listening on all addresses: pass --issuer https://<public name>:<port>")
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


@click.command("server")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="TOML config file")
@click.option("--listen", help="HOST:PORT to serve TLS on  [default: 127.0.0.1:8443]")
@click.option("--issuer", help="issuer URL, https://host:port  [default: from --listen]")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="state directory: the SQLite store, legacy key files  [default: .spiffe-broker]",
)
@click.option("--policy", type=click.Path(dir_okay=False, path_type=Path), help="policy file (YAML)")
@click.option("--workload-api", help="Workload API address  [default: $SPIFFE_ENDPOINT_SOCKET]")
@click.option(
    "--cert", type=click.Path(dir_okay=False, path_type=Path), help="X509-SVID chain PEM (instead of --workload-api)"
)
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), help="private key PEM for --cert")
@click.option("--bundle", multiple=True, help="[TRUST_DOMAIN=]PEM roots; repeat for federated domains")
@click.option("--jwt-bundle", multiple=True, help="[TRUST_DOMAIN=]JWKS of JWT-SVID authorities; repeatable")
@click.option("--health-port", type=click.IntRange(0, 65535), help="plain-HTTP port for /healthz and /readyz")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="serve Prometheus /metrics on [metrics] host:PORT")
@click.option(
    "--store", "store_url", help="store URL: sqlite:///path or postgresql://...  [default: <state-dir>/broker.db]"
)
@click.option(
    "--kek-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="key-encryption key file (or $SPIFFE_BROKER_KEK); make one with: spiffe-broker keys init-kek PATH",
)
@click.option("--admin-id", multiple=True, help="SPIFFE ID allowed to use the admin API (/admin/v1); repeatable")
def server(
    config_file: Path | None,
    listen: str | None,
    issuer: str | None,
    state_dir: Path | None,
    policy: Path | None,
    workload_api: str | None,
    cert: Path | None,
    key: Path | None,
    bundle: tuple[str, ...],
    jwt_bundle: tuple[str, ...],
    health_port: int | None,
    metrics_port: int | None,
    store_url: str | None,
    kek_file: Path | None,
    admin_id: tuple[str, ...],
) -> None:
    """Run the token service: X.509-SVID (mTLS) in, certificate-bound access tokens out."""
    try:
        overrides = _overrides(listen, issuer, state_dir, policy, health_port)
        overrides.update(_state_overrides(store_url, kek_file, admin_id))
        if metrics_port is not None:
            overrides["metrics"] = {"port": metrics_port}
        settings = load_settings(config_file, overrides)
        if (cert is None) != (key is None):
            raise ConfigError("--cert and --key go together")
        if cert is not None and workload_api is not None:
            raise ConfigError("use either --workload-api or --cert/--key, not both")
        files = (cert, key, bundle, jwt_bundle) if cert is not None else None
        run_event_loop(_run(settings, files, workload_api))
    except BrokerError as exc:
        raise click.ClickException(exc.description or exc.error) from None


def _state_overrides(store_url: str | None, kek_file: Path | None, admin_ids: tuple[str, ...]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if store_url is not None:
        overrides["store"] = {"url": store_url}
    if kek_file is not None:
        overrides["keyring"] = {"kek_file": kek_file}
    if admin_ids:
        overrides["admin"] = {"spiffe_ids": list(admin_ids)}
    return overrides


def _overrides(
    listen: str | None, issuer: str | None, state_dir: Path | None, policy: Path | None, health_port: int | None
) -> dict[str, Any]:
    server: dict[str, Any] = {}
    if listen is not None:
        server["host"], server["port"] = parse_listen(listen)
    for name, value in (("issuer", issuer), ("policy", policy), ("health_port", health_port)):
        if value is not None:
            server[name] = value
    overrides: dict[str, Any] = {"server": server}
    if state_dir is not None:
        overrides["state_dir"] = state_dir
    return overrides
