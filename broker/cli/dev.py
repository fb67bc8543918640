"""``spiffe-broker dev``: the whole broker on one machine, on the embedded dev Workload API.

Every socket and port can be set (flags, ``SPIFFE_BROKER_*`` environment, or ``--config`` TOML), so two instances
run side by side; port 0 picks a free port. Ctrl-C (SIGINT) or SIGTERM stops everything cleanly.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from broker._eventloop import run as run_event_loop
from broker.cli._signals import stop_on_signals
from broker.cli.main import cli_errors
from broker.config import load_settings
from broker.devtools.stack import DEMO_SCOPE, DevStack, run_dev_stack


def _overrides(**flags: Any) -> dict[str, Any]:
    """Flag values that were given, as a nested settings dict (``section__key`` → ``{section: {key: v}}``)."""
    result: dict[str, Any] = {}
    for name, value in flags.items():
        if value is None:
            continue
        section, _, key = name.partition("__")
        if key:
            result.setdefault(section, {})[key] = value
        else:
            result[section] = value
    return result


def self_command() -> str:
    """How to run this same ``spiffe-broker`` from another terminal (the venv need not be activated there)."""
    program = Path(sys.argv[0])
    if program.name == "spiffe-broker":
        return (
            shlex.quote(str(program.absolute())) if shutil.which("spiffe-broker") != str(program) else "spiffe-broker"
        )
    return f"{shlex.quote(sys.executable)} -m broker.cli"


def render_banner(stack: DevStack) -> str:
    me = self_command()
    socket = shlex.quote(str(stack.sidecar_socket))
    audience = shlex.quote(stack.demo_audience)
    lines = [
        "spiffe-broker dev is running",
        f"  trust domain     {stack.trust_domain}   (state in {stack.state_dir})",
        f"  Workload API     {stack.workload_api}   (you are registered as {stack.workload_id})",
        f"  token service    {stack.issuer}   (metadata: /.well-known/oauth-authorization-server)",
        f"  sidecar          {stack.sidecar_socket}"
        + (f" and http://127.0.0.1:{stack.sidecar_http_port}" if stack.sidecar_http_port else ""),
        f"  demo API         {stack.demo_api_url}/hello   (audience {stack.demo_audience})",
        f"  policy           {stack.policy_file}   (reloaded on change)",
        *(f"  metrics          {url}   ({part})" for part, url in stack.metrics.items()),
        "",
        "Get a token from the sidecar:",
        f"  curl -s --unix-socket {socket} 'http://localhost/v1/token?audience={stack.demo_audience}'",
        f"  {me} token --socket {socket} --audience {audience}",
        "Call the demo API over mTLS with your SVID and the certificate-bound token:",
        f"  SPIFFE_ENDPOINT_SOCKET={stack.workload_api} {me} call {stack.demo_api_url}/hello"
        f" --audience {audience} --scope {DEMO_SCOPE} --socket {socket}",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


async def _serve(settings: Any) -> None:
    with stop_on_signals() as stopping:
        async with run_dev_stack(settings) as stack:
            click.echo(render_banner(stack), err=False)
            await stopping.wait()
            click.echo("stopping ...", err=True)


_path = click.Path(path_type=Path, dir_okay=False)


@click.command("dev")
@click.option("--config", "config_file", type=_path, help="TOML config file.")
@click.option("--trust-domain", help="Trust domain  [default: example.org]")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), help="[default: ./.spiffe-broker]")
@click.option("--workload-api-socket", type=_path, help="Dev Workload API socket  [default: private /tmp dir]")
@click.option("--x509-ttl", type=click.FloatRange(min=2.0), help="X.509-SVID lifetime, s  [default: 3600]")
@click.option("--server-port", type=click.IntRange(0, 65535), help="Token service port  [default: 8443]")
@click.option("--health-port", type=click.IntRange(0, 65535), help="Token service plain-HTTP health port")
@click.option("--policy", type=_path, help="Policy file  [default: STATE_DIR/policy.yaml, created]")
@click.option("--sidecar-socket", type=_path, help="Sidecar socket  [default: private /tmp dir]")
@click.option("--sidecar-http-port", type=click.IntRange(0, 65535), help="Also serve the sidecar on loopback")
@click.option("--demo-port", type=click.IntRange(0, 65535), help="Demo API port  [default: 8444]")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="/metrics of the Workload API, token service and sidecar on PORT, PORT+1, PORT+2 (0: free ports)",
)
@cli_errors()
def dev(config_file: Path | None, **flags: Any) -> None:
    """Run the dev Workload API, the token service, a sidecar and the demo API, until Ctrl-C."""
    overrides = _overrides(
        trust_domain=flags["trust_domain"],
        state_dir=flags["state_dir"],
        workload_api__socket=flags["workload_api_socket"],
        workload_api__x509_svid_ttl=flags["x509_ttl"],
        server__port=flags["server_port"],
        server__health_port=flags["health_port"],
        server__policy=flags["policy"],
        sidecar__socket=flags["sidecar_socket"],
        sidecar__http_port=flags["sidecar_http_port"],
        demo_api__port=flags["demo_port"],
        metrics__port=flags["metrics_port"],
    )
    run_event_loop(_serve(load_settings(config_file, overrides)))


__all__ = ["dev", "render_banner"]
