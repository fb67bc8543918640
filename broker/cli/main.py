"""The ``spiffe-broker`` command: one group, one module per subcommand."""

from __future__ import annotations

import importlib
import logging

import click

# (command name, module under broker.cli, attribute): modules are imported lazily so `--help` stays fast.
SUBCOMMANDS: tuple[tuple[str, str, str], ...] = (
    ("dev", "dev", "dev"),
    ("workload-api", "workload_api", "workload_api"),
    ("server", "server", "server"),
    ("sidecar", "sidecar", "sidecar"),
    ("demo-api", "demo_api", "demo_api"),
    ("token", "client", "token"),
    ("call", "client", "call"),
    ("entries", "entries", "entries"),
)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, _, _ in SUBCOMMANDS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for name, module, attr in SUBCOMMANDS:
            if name == cmd_name:
                command = getattr(importlib.import_module(f"broker.cli.{module}"), attr)
                assert isinstance(command, click.Command)
                return command
        return None


# Client commands print like curl: only warnings and errors go to the log unless asked otherwise.
QUIET_COMMANDS = frozenset({"token", "call", "entries"})


@click.group(cls=LazyGroup)
@click.option(
    "--log-level", default=None, envvar="SPIFFE_BROKER_LOG_LEVEL", help="[default: INFO; WARNING for clients]"
)
@click.pass_context
def main(ctx: click.Context, log_level: str | None) -> None:
    """spiffe-broker: SPIFFE workload identity in, short-lived certificate-bound OAuth tokens out."""
    level = log_level or ("WARNING" if ctx.invoked_subcommand in QUIET_COMMANDS else "INFO")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
