"""``spiffe-broker token`` and ``spiffe-broker call``: the app's side, for the quick start and for scripts.

``token`` asks the sidecar for an access token and prints it. ``call`` makes an HTTPS request the way a bound
token must be used: mTLS with the workload's X.509-SVID from the Workload API (the certificate the token is bound
to, RFC 8705 §3), the token from the sidecar as ``Authorization: Bearer``; the response is printed like curl.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import aiohttp
import click

from broker._eventloop import run as run_event_loop
from broker.appclient.sidecar import SidecarToken, fetch_token
from broker.cli.main import cli_errors
from broker.config import BrokerSettings, load_settings, unix_socket_path
from broker.errors import ConfigError, NetworkError
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.connector import NETWORK_ERRORS, SpiffeTLSConnector
from broker.identity.spiffetls.context import client_ssl_context
from broker.identity.workloadapi.source import WorkloadApiSvidSource, workload_api_address

__all__ = ["call", "token"]

_HEADER = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*)")  # RFC 9110 §5.1 field-name ":" value


def _socket(settings: BrokerSettings, socket: str | None) -> Path:
    """``--socket`` as a path or a ``unix:///path`` URL, else the configured ``sidecar.socket``."""
    if socket is not None:
        return unix_socket_path(socket)
    if settings.sidecar.socket is None:
        raise ConfigError("pass --socket (the sidecar's Unix socket)")
    return settings.sidecar.socket


socket_option = click.option(
    "--socket",
    metavar="PATH|unix:///PATH",
    help="the sidecar's Unix socket  [default: sidecar.socket]",
)
config_option = click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="TOML config file"
)


@click.command("token")
@click.option("--audience", required=True, help="the API the token is for")
@click.option("--scope", help="space-separated scopes")
@socket_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="print the whole response as JSON")
@cli_errors()
def token(audience: str, scope: str | None, socket: str | None, config_file: Path | None, as_json: bool) -> None:
    """Print an access token for AUDIENCE from the sidecar."""
    path = _socket(load_settings(config_file), socket)
    result = run_event_loop(fetch_token(socket_path=path, audience=audience, scope=scope))
    if as_json:
        document = {
            "access_token": result.access_token,
            "token_type": result.token_type,
            "issued_token_type": result.issued_token_type,
            "scope": result.scope,
            "expires_in": result.expires_in,
        }
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(result.access_token)


def _headers(values: tuple[str, ...], bearer: SidecarToken) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        match = _HEADER.fullmatch(value)
        if match is None:
            raise ConfigError(f"-H {value!r} is not 'Name: value'")
        headers[match[1]] = match[2]
    headers["Authorization"] = f"Bearer {bearer.access_token}"
    return headers


def _print_head(response: aiohttp.ClientResponse) -> None:
    version = f"{response.version.major}.{response.version.minor}" if response.version else "1.1"
    click.echo(f"HTTP/{version} {response.status} {response.reason or ''}".rstrip())
    for name, value in response.headers.items():
        click.echo(f"{name}: {value}")
    click.echo("")


async def _call(
    url: str,
    *,
    bearer: SidecarToken,
    address: str,
    server_id: SpiffeId | None,
    method: str,
    headers: dict[str, str],
    data: str | None,
    include: bool,
) -> int:
    async with WorkloadApiSvidSource(address=address) as source:
        context = client_ssl_context(source, server_id=server_id)
        try:
            async with (
                aiohttp.ClientSession(connector=SpiffeTLSConnector(context)) as session,
                session.request(method, url, headers=headers, data=data, allow_redirects=False) as response,
            ):
                body = await response.read()
                if include:
                    _print_head(response)
                sys.stdout.buffer.write(body)
                sys.stdout.buffer.flush()
                return response.status
        except NETWORK_ERRORS as exc:
            raise NetworkError(f"request to {url} failed: {str(exc) or type(exc).__name__}") from None
        finally:
            context.detach()


@click.command("call")
@click.argument("url")
@click.option("--audience", required=True, help="the API's audience (the token's target)")
@click.option("--scope", help="space-separated scopes")
@socket_option
@config_option
@click.option("--workload-api", help="Workload API address  [default: $SPIFFE_ENDPOINT_SOCKET]")
@click.option("--server-id", help="the API's expected SPIFFE ID  [default: any ID of a trusted trust domain]")
@click.option("-X", "--request", "method", default="GET", show_default=True, help="HTTP method")
@click.option("-H", "--header", "header", multiple=True, help="extra header 'Name: value' (repeatable)")
@click.option("-d", "--data", help="request body")
@click.option("-i", "--include", is_flag=True, help="print the status line and response headers")
@click.option("-f", "--fail", is_flag=True, help="exit with status 22 on HTTP errors (>= 400), like curl")
@cli_errors()
def call(
    url: str,
    audience: str,
    scope: str | None,
    socket: str | None,
    config_file: Path | None,
    workload_api: str | None,
    server_id: str | None,
    method: str,
    header: tuple[str, ...],
    data: str | None,
    include: bool,
    fail: bool,
) -> None:
    """Call URL over mTLS with this workload's X.509-SVID and a bound token from the sidecar."""
    if not url.startswith("https://"):
        raise ConfigError("URL must be https:// (the token is bound to the TLS client certificate)")
    settings = load_settings(config_file)
    bearer = run_event_loop(fetch_token(socket_path=_socket(settings, socket), audience=audience, scope=scope))
    configured = workload_api or (str(settings.workload_api.socket) if settings.workload_api.socket else None)
    status = run_event_loop(
        _call(
            url,
            bearer=bearer,
            address=workload_api_address(configured),
            server_id=SpiffeId.parse(server_id) if server_id else None,
            method=method.upper(),
            headers=_headers(header, bearer),
            data=data,
            include=include,
        )
    )
    if fail and status >= 400:
        sys.exit(22)
