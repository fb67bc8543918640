"""``spiffe-broker sidecar``: serve the workload's access tokens to its apps on a Unix socket.

Identity comes from the Workload API (``--workload-api`` or ``SPIFFE_ENDPOINT_SOCKET``). The socket is created
with mode 0600 by default: whoever can connect to it gets the workload's tokens. Stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import click

from broker.config import BrokerSettings, load_settings
from broker.errors import BrokerError, ConfigError
from broker.identity.errors import SvidUnavailableError
from broker.identity.workload_source import WorkloadApiSvidSource, workload_api_address
from broker.sidecar.service import start_sidecar, token_service_matcher
from broker.sidecar.sockets import parse_socket_mode

__all__ = ["sidecar"]

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0


async def _run(settings: BrokerSettings, token_service: str, token_service_id: str | None, api: str | None) -> None:
    configured = api or (str(settings.workload_api.socket) if settings.workload_api.socket else None)
    source = WorkloadApiSvidSource(address=workload_api_address(configured))
    try:
        await source.start()  # serve at once: /readyz says 503 until an SVID arrives
        sidecar = await start_sidecar(
            source=source,
            token_service_url=token_service,
            token_service_id=token_service_matcher(token_service_id, source),
            socket_path=settings.sidecar.socket,
            socket_mode=settings.sidecar.socket_mode,
            http_port=settings.sidecar.http_port,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            try:
                await source.wait_ready(READY_TIMEOUT)
            except SvidUnavailableError as exc:
                log.warning("%s; serving anyway, not ready until an SVID arrives", exc.description)
            await stop.wait()
            log.info("stopping sidecar")
        finally:
            await sidecar.aclose()
    finally:
        await source.aclose()


def _overrides(socket: Path | None, socket_mode: str | None, http_port: int | None) -> dict[str, Any]:
    section: dict[str, Any] = {}
    if socket is not None:
        section["socket"] = socket
    if socket_mode is not None:
        section["socket_mode"] = parse_socket_mode(socket_mode)
    if http_port is not None:
        section["http_port"] = http_port
    return {"sidecar": section}


@click.command("sidecar")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="TOML config file")
@click.option("--socket", type=click.Path(dir_okay=False, path_type=Path), help="Unix socket to serve apps on")
@click.option("--socket-mode", help="socket file mode, octal  [default: 0600]")
@click.option("--http-port", type=click.IntRange(0, 65535), help="also serve on 127.0.0.1:PORT")
@click.option("--token-service", help="the token service's issuer URL, https://host:port  [default: server.issuer]")
@click.option(
    "--token-service-id", help="the token service's SPIFFE ID  [default: spiffe://<own trust domain>/spiffe-broker]"
)
@click.option("--workload-api", help="Workload API address  [default: $SPIFFE_ENDPOINT_SOCKET]")
def sidecar(
    config_file: Path | None,
    socket: Path | None,
    socket_mode: str | None,
    http_port: int | None,
    token_service: str | None,
    token_service_id: str | None,
    workload_api: str | None,
) -> None:
    """Serve GET /v1/token?audience=A[&scope=S] to this workload's apps, from a cache kept fresh."""
    try:
        settings = load_settings(config_file, _overrides(socket, socket_mode, http_port))
        if settings.sidecar.socket is None and settings.sidecar.http_port is None:
            raise ConfigError("pass --socket (and/or --http-port)")
        issuer = token_service or settings.server.issuer
        if not issuer:
            raise ConfigError("pass --token-service https://host:port (the token service's issuer URL)")
        asyncio.run(_run(settings, issuer, token_service_id, workload_api))
    except BrokerError as exc:
        raise click.ClickException(exc.description or exc.error) from None
