"""``spiffe-broker demo-api``: a small resource server that accepts only the broker's certificate-bound tokens.

``GET /hello`` answers ``{"hello": <caller's SPIFFE ID>, "scope": ...}`` when the bearer token verifies and is
bound to the TLS client certificate of the same connection; otherwise 401 ``invalid_token``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from broker._eventloop import run as run_event_loop
from broker.cli._signals import Stopped, stop_on_signals, until_stopped
from broker.cli.main import cli_errors
from broker.cli.server import parse_listen
from broker.config import BrokerSettings, load_settings
from broker.devtools.demo_api import start_demo_api
from broker.errors import ConfigError
from broker.identity.workloadapi.source import WorkloadApiSvidSource, workload_api_address
from broker.sidecar.service import token_service_matcher

__all__ = ["demo_api"]

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0


async def _run(settings: BrokerSettings, issuer: str, audience: str, broker_id: str | None, api: str | None) -> None:
    configured = api or (str(settings.workload_api.socket) if settings.workload_api.socket else None)
    source = WorkloadApiSvidSource(address=workload_api_address(configured))
    with stop_on_signals() as stop:  # a signal stops it at once, also while waiting for the first SVID
        try:
            await until_stopped(stop, source.wait_ready(READY_TIMEOUT))
            running = await start_demo_api(
                source=source,
                issuer=issuer,
                audience=audience,
                token_service_id=token_service_matcher(broker_id, source),
                host=settings.demo_api.host,
                port=settings.demo_api.port,
            )
            click.echo(f"demo API: https://{settings.demo_api.host}:{running.port}/hello (audience {audience})")
            try:
                await stop.wait()
            finally:
                await running.aclose()
        except Stopped:
            log.info("stopped before the first SVID arrived")
        finally:
            await source.aclose()


def _overrides(listen: str | None, audience: str | None) -> dict[str, Any]:
    section: dict[str, Any] = {}
    if listen is not None:
        section["host"], section["port"] = parse_listen(listen)
    if audience is not None:
        section["audience"] = audience
    return {"demo_api": section}


@click.command("demo-api")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="TOML config file")
@click.option("--listen", help="HOST:PORT to serve TLS on  [default: 127.0.0.1:8444]")
@click.option("--issuer", help="the token service's issuer URL  [default: server.issuer]")
@click.option("--audience", help="this API's audience, as the policy names it")
@click.option(
    "--token-service-id", help="the token service's SPIFFE ID  [default: spiffe://<own trust domain>/spiffe-broker]"
)
@click.option("--workload-api", help="Workload API address  [default: $SPIFFE_ENDPOINT_SOCKET]")
@cli_errors()
def demo_api(
    config_file: Path | None,
    listen: str | None,
    issuer: str | None,
    audience: str | None,
    token_service_id: str | None,
    workload_api: str | None,
) -> None:
    """Run the demo resource server (GET /hello) over TLS with this workload's X.509-SVID."""
    settings = load_settings(config_file, _overrides(listen, audience))
    issuer = issuer or settings.server.issuer
    if not issuer:
        raise ConfigError("pass --issuer https://host:port (the token service's issuer URL)")
    if not settings.demo_api.audience:
        raise ConfigError("pass --audience (this API's name in the broker's policy)")
    run_event_loop(_run(settings, issuer, settings.demo_api.audience, token_service_id, workload_api))
