"""``spiffe-broker doctor``: check a node from top to bottom and name the first broken link, with its fix.

It goes the way a token goes, and stops at the first link that is broken (every later check is ``skipped``,
since it would fail for the same reason):

1. ``workload-api`` (:mod:`broker.cli._doctor_identity`): the Workload API address as the sidecar resolves it
   (``--workload-api``, ``workload_api.socket``, ``SPIFFE_ENDPOINT_SOCKET``); the socket exists; it answers with
   an X.509-SVID for this process's uid (PermissionDenied: no registration entry matches it).
2. ``trust-bundle`` (same module): the X.509-SVID chains to its own trust domain's bundle, which holds an
   unexpired authority; a fresh JWT-SVID names the same ID and verifies with the JWT bundle.
3. ``token-service`` (:mod:`broker.cli._doctor_service`): TLS with the X.509-SVID; the server's SPIFFE ID is the
   expected one; its RFC 8414 metadata is valid and its ``issuer`` is the one asked for.
4. ``policy`` (same module; only with ``--audience``): a real RFC 8693 exchange by the sidecar's client; each
   refusal is named (``invalid_target``: the audience is not in the policy for this SPIFFE ID, and so on).
5. ``jwks`` (:mod:`broker.cli._doctor_verify`): the JWKS a verifier fetches holds the token's ``kid``, and the
   token's signature verifies with that key.
6. ``time-sync`` (same module): this node's clock against the token service's (its token's ``iat``, its HTTP
   ``Date``) and the Workload API issuer's (a fresh JWT-SVID's ``iat``), within ``--max-skew`` (default 5 s).

Output: one line per check, ``ok``, ``FAIL`` (what is broken. Fix: what to do) or ``skipped (why)``; ``--json``
prints the same as one JSON document (:mod:`broker.cli._doctor_report`). Exit code: 0 when no check failed
(a check skipped for want of ``--audience`` is not a failure), 1 at the first failure, 2 for a usage error.
It prints SPIFFE IDs, key IDs, URLs and times, never a token, key or secret.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click

from broker._eventloop import run as run_event_loop
from broker.cli._doctor_identity import TRUST_BUNDLE, WORKLOAD_API, check_trust_bundle, check_workload_api
from broker.cli._doctor_node import Inputs, Node
from broker.cli._doctor_report import CheckFailed, Outcome, Report, Status
from broker.cli._doctor_service import POLICY, TOKEN_SERVICE, check_policy, check_token_service
from broker.cli._doctor_verify import JWKS, TIME_SYNC, check_jwks, check_time_sync
from broker.cli._state import json_option
from broker.cli.main import cli_errors
from broker.config import BrokerSettings, load_settings
from broker.errors import ConfigError
from broker.identity.errors import InvalidSpiffeIdError
from broker.identity.spiffeid import SpiffeId
from broker.oauth.metadata import check_issuer

__all__ = ["CHECKS", "DEFAULT_MAX_SKEW", "MAX_SKEW_LIMIT", "doctor", "run_checks"]

Check = Callable[[Node], Awaitable[Outcome]]

CHECKS: tuple[tuple[str, Check], ...] = (
    (WORKLOAD_API, check_workload_api),
    (TRUST_BUNDLE, check_trust_bundle),
    (TOKEN_SERVICE, check_token_service),
    (POLICY, check_policy),
    (JWKS, check_jwks),
    (TIME_SYNC, check_time_sync),
)
DEFAULT_MAX_SKEW = 5.0
MAX_SKEW_LIMIT = 30.0  # the token service's leeway on JWT-SVID times: a larger skew is refused there anyway
DEFAULT_TIMEOUT = 5.0


async def run_checks(inputs: Inputs) -> Report:
    """Every check in order; after the first failure the rest are skipped. Resources close when done."""
    outcomes: list[Outcome] = []
    async with contextlib.AsyncExitStack() as stack:
        node = Node(inputs, stack)
        for name, check in CHECKS:
            if any(outcome.status is Status.FAIL for outcome in outcomes):
                outcomes.append(Outcome.skipped(name))
                continue
            try:
                outcomes.append(await check(node))
            except CheckFailed as failure:
                outcomes.append(Outcome.failed(name, failure))
    return Report(tuple(outcomes))


def _issuer(flag: str | None, settings: BrokerSettings) -> str:
    issuer = flag or settings.server.issuer
    if not issuer:
        raise click.UsageError("pass --token-service https://host:port (the token service's issuer URL)")
    try:
        return check_issuer(issuer)
    except ConfigError as exc:
        raise click.UsageError(exc.description) from None


def _server_id(flag: str | None) -> str | None:
    try:
        return str(SpiffeId.parse(flag)) if flag else None
    except InvalidSpiffeIdError as exc:
        raise click.UsageError(f"--token-service-id: {exc.description}") from None


def _workload_api(flag: str | None, settings: BrokerSettings) -> str | None:
    """As the sidecar takes it: the flag, else the config file's; ``SPIFFE_ENDPOINT_SOCKET`` comes in check 1."""
    return flag or (str(settings.workload_api.socket) if settings.workload_api.socket else None)


@click.command("doctor", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="TOML config file")
@click.option("--workload-api", help="Workload API address  [default: workload_api.socket, $SPIFFE_ENDPOINT_SOCKET]")
@click.option(
    "--token-service", "issuer", help="the token service's issuer URL, https://host:port  [default: server.issuer]"
)
@click.option(
    "--token-service-id",
    "server_id",
    help="the token service's SPIFFE ID  [default: spiffe://<own trust domain>/spiffe-broker]",
)
@click.option("--audience", help="try a real token exchange for this audience (checks policy, JWKS, clocks)")
@click.option("--scope", help="the scope to ask for with --audience")
@click.option(
    "--max-skew",
    type=click.FloatRange(0, MAX_SKEW_LIMIT, min_open=True),
    default=DEFAULT_MAX_SKEW,
    show_default=True,
    help=f"seconds another clock may differ from this node's (at most {MAX_SKEW_LIMIT:g}, the service's leeway)",
)
@click.option("--timeout", type=click.FloatRange(0, 60, min_open=True), default=DEFAULT_TIMEOUT, show_default=True,
              help="seconds to wait for each answer")  # fmt: skip
@json_option
@cli_errors()
def doctor(config_file: Path | None, as_json: bool, **options: Any) -> None:
    """Check this node from the Workload API to the token service; name the first broken link and its fix."""
    settings = load_settings(config_file)
    options.update(
        workload_api=_workload_api(options["workload_api"], settings),
        issuer=_issuer(options["issuer"], settings),
        server_id=_server_id(options["server_id"]),
    )
    report = run_event_loop(run_checks(Inputs(**options)))
    click.echo(report.json() if as_json else "\n".join(report.lines()))
    if report.exit_code:
        raise click.exceptions.Exit(report.exit_code)
