"""``spiffe-broker sidecar``: serve the workload's access tokens to its apps on a Unix socket, and/or keep them in
token files.

Identity comes from the Workload API (``--workload-api`` or ``SPIFFE_ENDPOINT_SOCKET``). The socket is created
with mode 0600 by default: whoever can connect to it gets the workload's tokens. ``--token-file`` keeps a token in
a file (see :mod:`broker.sidecar.token_files`); with token files and neither ``--socket`` nor ``--http-port`` it
only keeps the files. ``--once`` writes the token files and exits (0 when all are written, 1 with a one-line
reason if they cannot be within ``--once-timeout``), for init containers and Jobs.
``--token-binding dpop`` binds the tokens to the SVID's key with DPoP proofs (RFC 9449) instead of to its
certificate, and serves ``POST /v1/dpop-proof`` (:mod:`broker.sidecar.proofs`); the apps need that endpoint, so it
takes a socket or HTTP port (not ``--once``, not token files alone).
``--egress-socket`` / ``--egress-port`` (``[egress]``) also serve the egress proxy that injects governed API-key
exceptions into the apps' outgoing requests (:mod:`broker.sidecar.egress`); the egress socket takes
``--socket-mode`` too.
SIGINT/SIGTERM stop the sidecar at once in every phase: waiting for the Workload API, for the first SVID, or for
the token service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from broker._eventloop import run as run_event_loop
from broker.cli._signals import Stopped, stop_on_signals, until_stopped
from broker.cli.main import cli_errors
from broker.config import (
    BrokerSettings,
    EgressSettings,
    MetricsSettings,
    SidecarSettings,
    load_settings,
    unix_socket_path,
)
from broker.errors import ConfigError
from broker.identity.errors import SvidUnavailableError
from broker.identity.source import current_x5t
from broker.identity.workloadapi.source import WorkloadApiSvidSource, workload_api_address
from broker.sidecar.cache import TokenCache
from broker.sidecar.exchanger import TokenServiceClient
from broker.sidecar.service import start_sidecar, token_service_matcher
from broker.sidecar.sockets import parse_socket_mode
from broker.sidecar.token_files import TokenFile, TokenFileError, TokenFileKeeper, prepare_token_files

if TYPE_CHECKING:
    from broker.sidecar.egress.service import EgressOptions

__all__ = ["parse_token_file_flag", "sidecar"]

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
_T = TypeVar("_T")
_TOKEN_FILE_KEYS = frozenset({"path", "audience", "scope", "mode", "uid", "gid"})


def _token_files(settings: SidecarSettings) -> list[TokenFile]:
    return [TokenFile(f.path, f.audience, f.scope, f.mode, f.uid, f.gid) for f in settings.token_files]


async def _run(settings: BrokerSettings, token_service: str, token_service_id: str | None, api: str | None) -> None:
    with stop_on_signals() as stop:  # first: a signal during any later phase stops at once
        configured = api or (str(settings.workload_api.socket) if settings.workload_api.socket else None)
        prepare_token_files(_token_files(settings.sidecar))  # refuse an unsafe directory before anything runs
        source = WorkloadApiSvidSource(address=workload_api_address(configured))
        try:
            await source.start()
            sidecar = settings.sidecar
            if sidecar.once:
                await _once(sidecar, source, token_service, token_service_id, stop)
            elif sidecar.socket is None and sidecar.http_port is None and not _egress_enabled(settings.egress):
                await _keep_files(sidecar, source, token_service, token_service_id, stop)
            else:
                egress = _egress_options(settings.egress, sidecar.socket_mode)
                await _serve(sidecar, source, token_service, token_service_id, stop, egress, settings.metrics)
        finally:
            await source.aclose()


def _egress_enabled(settings: EgressSettings) -> bool:
    return settings.socket is not None or settings.port is not None


def _egress_options(settings: EgressSettings, socket_mode: int) -> EgressOptions | None:
    """The egress proxy's options when it listens; without a listener its modules are never imported."""
    if not _egress_enabled(settings):
        return None
    from broker.sidecar.egress.service import EgressOptions

    return EgressOptions.from_settings(settings, socket_mode=socket_mode)


async def _serve(
    settings: SidecarSettings,
    source: WorkloadApiSvidSource,
    issuer: str,
    server_id: str | None,
    stop: asyncio.Event,
    egress: EgressOptions | None = None,
    metrics: MetricsSettings | None = None,
) -> None:
    sidecar = await start_sidecar(  # serve at once: /readyz says 503 until an SVID arrives
        source=source,
        token_service_url=issuer,
        token_service_id=token_service_matcher(server_id, source),
        socket_path=settings.socket,
        socket_mode=settings.socket_mode,
        http_port=settings.http_port,
        probe_interval=settings.probe_interval,
        follow_revocations=settings.follow_revocations,
        token_binding=settings.token_binding,
        egress=egress,
        metrics=metrics,
    )
    files = _token_files(settings)
    keeper = asyncio.create_task(TokenFileKeeper(sidecar.cache, source, files).run()) if files else None
    try:
        with contextlib.suppress(Stopped):
            try:
                await until_stopped(stop, source.wait_ready(READY_TIMEOUT))
            except SvidUnavailableError as exc:
                log.warning("%s; serving anyway, not ready until an SVID arrives", exc.description)
            await stop.wait()
        log.info("stopping sidecar")
    finally:
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        await sidecar.aclose()


def _files_only(
    settings: SidecarSettings, source: WorkloadApiSvidSource, issuer: str, server_id: str | None
) -> tuple[TokenServiceClient, TokenCache, TokenFileKeeper]:
    """The token service client, a cache and the keeper, without the HTTP API (``--once`` and files only)."""
    client = TokenServiceClient(source=source, issuer=issuer, server_id=token_service_matcher(server_id, source))
    cache = TokenCache(exchanger=client, source=source)
    return client, cache, TokenFileKeeper(cache, source, _token_files(settings))


async def _keep_files(
    settings: SidecarSettings, source: WorkloadApiSvidSource, issuer: str, server_id: str | None, stop: asyncio.Event
) -> None:
    """No socket, no port: only keep the token files fresh, until a signal."""
    client, cache, keeper = _files_only(settings, source, issuer, server_id)
    keeping = asyncio.create_task(keeper.run())
    log.info("keeping %d token file(s) (token service %s)", len(settings.token_files), issuer)
    try:
        await until_stopped(stop, keeping)
    except Stopped:
        log.info("stopping sidecar")
    finally:
        keeping.cancel()
        await asyncio.gather(keeping, return_exceptions=True)
        await cache.aclose()
        await client.aclose()


async def _once(
    settings: SidecarSettings, source: WorkloadApiSvidSource, issuer: str, server_id: str | None, stop: asyncio.Event
) -> None:
    """Write every token file, then return; bounded by ``once_timeout``; a signal interrupts it."""
    limit = settings.once_timeout
    client, cache, keeper = _files_only(settings, source, issuer, server_id)
    try:
        async with asyncio.timeout(limit):
            await until_stopped(stop, source.wait_ready(limit))
            await until_stopped(stop, keeper.write_once())
    except (TimeoutError, SvidUnavailableError):
        waiting = (
            "the token service" if current_x5t(source) else f"an X.509-SVID from the Workload API at {source.address}"
        )
        reasons = "; ".join(keeper.problems()) or f"still waiting for {waiting}"
        raise TokenFileError(f"token files not written within {limit:g}s: {reasons}") from None
    except Stopped:
        raise TokenFileError("interrupted before the token files were written") from None
    finally:
        await cache.aclose()
        await client.aclose()
    log.info("wrote %d token file(s)", len(settings.token_files))


def parse_token_file_flag(value: str) -> dict[str, str]:
    """``path=P,audience=A[,scope=S][,mode=0640][,uid=N][,gid=N]`` (``--token-file``) as settings values."""
    fields: dict[str, str] = {}
    for part in value.split(","):
        name, sep, text = part.partition("=")
        name = name.strip()
        if not sep or name not in _TOKEN_FILE_KEYS or name in fields:
            raise ConfigError(
                f"--token-file {value!r}: expected path=P,audience=A[,scope=S][,mode=0640][,uid=N][,gid=N] "
                "(each key once; use the config file for an audience or scope containing ',')"
            )
        fields[name] = text
    return fields


def _overrides(
    socket: str | None, socket_mode: str | None, http_port: int | None, egress: dict[str, Any], **more: Any
) -> dict[str, Any]:
    section: dict[str, Any] = {k: v for k, v in more.items() if v is not None}
    if socket is not None:
        section["socket"] = socket
    if socket_mode is not None:
        section["socket_mode"] = parse_socket_mode(socket_mode)
    if http_port is not None:
        section["http_port"] = http_port
    overrides: dict[str, Any] = {"sidecar": section}
    if any(value is not None for value in egress.values()):
        overrides["egress"] = {k: v for k, v in egress.items() if v is not None}
    return overrides


@click.command("sidecar")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="TOML config file")
@click.option("--socket", help="Unix socket to serve apps on (a path or unix:///path)")
@click.option("--socket-mode", help="socket file mode, octal  [default: 0600]")
@click.option("--http-port", type=click.IntRange(0, 65535), help="also serve on 127.0.0.1:PORT")
@click.option("--token-service", help="the token service's issuer URL, https://host:port  [default: server.issuer]")
@click.option(
    "--token-service-id", help="the token service's SPIFFE ID  [default: spiffe://<own trust domain>/spiffe-broker]"
)
@click.option("--workload-api", help="Workload API address  [default: $SPIFFE_ENDPOINT_SOCKET]")
@click.option(
    "--token-file",
    "token_files",
    multiple=True,
    help="keep a token in a file: path=P,audience=A[,scope=S][,mode=0640][,uid=N][,gid=N] (repeatable)",
)
@click.option("--once", is_flag=True, default=None, help="write the token files, then exit (init containers, Jobs)")
@click.option("--once-timeout", type=click.FloatRange(min=0, min_open=True), help="give up --once after SECONDS [60]")
@click.option("--probe-interval", type=click.FloatRange(min=0, min_open=True), help="probe an idle token service [30]")
@click.option(
    "--token-binding",
    type=click.Choice(["mtls", "dpop"]),
    help="bind tokens to the SVID certificate (mtls) or to its key with DPoP proofs (dpop)  [default: mtls]",
)
@click.option("--egress-socket", help="serve the API-key egress proxy on this Unix socket (a path or unix:///path)")
@click.option("--egress-port", type=click.IntRange(0, 65535), help="serve the API-key egress proxy on 127.0.0.1:PORT")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="serve Prometheus /metrics on [metrics] host:PORT")
@cli_errors()
def sidecar(
    config_file: Path | None,
    socket: str | None,
    socket_mode: str | None,
    http_port: int | None,
    token_service: str | None,
    token_service_id: str | None,
    workload_api: str | None,
    token_files: tuple[str, ...],
    once: bool | None,
    once_timeout: float | None,
    probe_interval: float | None,
    token_binding: str | None,
    egress_socket: str | None,
    egress_port: int | None,
    metrics_port: int | None,
) -> None:
    """Serve GET /v1/token?audience=A[&scope=S] to this workload's apps, from a cache kept fresh."""
    files = [parse_token_file_flag(value) for value in token_files] or None
    more = {
        "token_files": files,
        "once": once,
        "once_timeout": once_timeout,
        "probe_interval": probe_interval,
        "token_binding": token_binding,
    }
    egress = {"socket": str(unix_socket_path(egress_socket)) if egress_socket else None, "port": egress_port}
    overrides = _overrides(socket, socket_mode, http_port, egress, **more)
    if metrics_port is not None:
        overrides["metrics"] = {"port": metrics_port}
    settings = load_settings(config_file, overrides)
    _check(settings.sidecar, settings.egress)
    issuer = token_service or settings.server.issuer
    if not issuer:
        raise ConfigError("pass --token-service https://host:port (the token service's issuer URL)")
    run_event_loop(_run(settings, issuer, token_service_id, workload_api))


def _check(settings: SidecarSettings, egress: EgressSettings) -> None:
    no_listener = settings.socket is None and settings.http_port is None
    if settings.token_binding == "dpop" and (settings.once or no_listener):  # noqa: S105 - a mode, not a secret
        raise ConfigError(
            "token_binding = dpop needs --socket or --http-port: the apps get their DPoP proofs from the sidecar "
            "(POST /v1/dpop-proof), so --once and token files alone cannot serve them"
        )
    if settings.once:
        if not settings.token_files:
            raise ConfigError("--once needs at least one --token-file (or [[sidecar.token_files]] in the config)")
    elif no_listener and not settings.token_files and not _egress_enabled(egress):
        raise ConfigError(
            "pass --socket (and/or --http-port, --egress-socket, --egress-port, or --token-file to keep tokens in "
            "files only)"
        )
    if settings.once and _egress_enabled(egress):
        raise ConfigError("--once writes the token files and exits: it serves no egress proxy")
