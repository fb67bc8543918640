"""The ``spiffe-broker`` command: one group, one module per subcommand, one seam where failures become messages.

Every subcommand runs inside :func:`cli_errors` (the group's ``invoke``; commands also wear it as a decorator so
they fail the same way when invoked on their own), the way httpx's ``map_exceptions`` translates lower-layer errors
in one place. An expected failure from any layer ends as one line,
``Error: <what is wrong>; <what to do>``, and a non-zero exit, never a traceback::

    BrokerError (config, identity, OAuth, sidecar)   "<code>: <description>"                      exit 1
    OSError (EADDRINUSE, EACCES, ENOENT, EROFS ...)  "<path or address>: <strerror>; <what to do>"  exit 1
    click usage errors (unknown option, bad level)   click's usage line, then "Error: ..."        exit 2
    anything else (a bug)                            "unexpected <type>; run with --log-level DEBUG" exit 1

Logging: ``--log-level`` applies to spiffe-broker's own loggers (``broker.*`` and the access log it writes
through ``aiohttp.access``). Every other library stays at WARNING unless named with ``--log-level-for``
(``SPIFFE_BROKER_LOG_LEVELS``): ``hpack`` at DEBUG, for one, logs decoded gRPC and HTTP/2 headers.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
from collections.abc import Iterator
from typing import Any

import click
from click.core import ParameterSource

from broker._logging import LogFormat, RequestIdFilter, formatter_for, skip_unprinted_record_fields
from broker.errors import BrokerError

__all__ = ["PROG_NAME", "cli_errors", "configure_logging", "describe_os_error", "main"]

log = logging.getLogger(__name__)

PROG_NAME = "spiffe-broker"
COMPLETE_VAR = "_SPIFFE_BROKER_COMPLETE"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
OWN_LOGGERS = ("broker", "aiohttp.access")  # the access log's lines are written by broker.server.app
DEBUG_HINT = "run with --log-level DEBUG for details"

# What to do about the errors a command meets in the field; the message says what happened and where.
_OS_HINTS: dict[int, str] = {
    errno.EADDRINUSE: "another process listens there (a second spiffe-broker?): stop it or choose another port "
    "(0 picks a free one)",
    errno.EADDRNOTAVAIL: "that address is not on this machine: listen on 127.0.0.1 or one of this host's addresses",
    errno.EACCES: "choose a path this user can write (or a port >= 1024), or fix the permissions",
    errno.EPERM: "choose a path this user can write (or a port >= 1024), or fix the permissions",
    errno.EROFS: "that file system is read-only: choose a writable location",
    errno.ENOENT: "check the path: its directory must exist and be reachable",
    errno.ENOTDIR: "a part of the path is a file, not a directory: fix the path",
    errno.EEXIST: "a file is at that path (or on the way to it): remove it or choose another path",
    errno.EISDIR: "that path is a directory: name a file",
    errno.ENOSPC: "the disk is full: free space or choose another location",
    errno.ENAMETOOLONG: "choose a shorter path (a Unix socket path must stay under about 100 bytes)",
    errno.ECONNREFUSED: "nothing listens there: start it first, or check the address",
}


def describe_os_error(exc: OSError) -> str:
    """One line: where (path or address), what (the OS's words), and what to do about it."""
    what = exc.strerror or str(exc)
    where = ", ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
    hint = _OS_HINTS.get(exc.errno or 0, DEBUG_HINT)
    return f"{where}: {what}; {hint}" if where else f"{what}; {hint}"


def describe_broker_error(exc: BrokerError) -> str:
    return f"{exc.error}: {exc.detail}" if exc.detail else exc.error


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn an expected failure from any layer into a one-line :class:`click.ClickException`."""
    try:
        yield
    except (click.ClickException, click.Abort, click.exceptions.Exit):
        raise
    except BrokerError as exc:
        raise click.ClickException(describe_broker_error(exc)) from None
    except OSError as exc:
        log.debug("command failed", exc_info=True)
        raise click.ClickException(describe_os_error(exc)) from None
    except Exception as exc:  # a bug: the type on stderr, the traceback at DEBUG only (it may quote input)
        log.debug("unexpected error", exc_info=True)
        raise click.ClickException(f"unexpected {type(exc).__name__} (a bug, please report it); {DEBUG_HINT}") from None


def _parse_level(value: str, where: str) -> int:
    name = value.strip().upper()
    if name not in LEVELS:
        raise click.BadParameter(f"{value!r} is not a log level; use one of {', '.join(LEVELS)}", param_hint=where)
    return int(logging.getLevelName(name))


def _where(ctx: click.Context, param: click.Parameter) -> str:
    """The flag, or the environment variable when the value came from there."""
    if param.name and ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT:
        return str(param.envvar)
    return "/".join(getattr(param, "opts", ())) or str(param.name)


def level_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    return None if value is None else _parse_level(value, _where(ctx, param))


def levels_for_callback(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, int]:
    """``LOGGER=LEVEL`` items; the environment form may also separate them with commas."""
    levels: dict[str, int] = {}
    for item in (part for value in values for part in value.split(",") if part.strip()):
        name, sep, level = item.strip().partition("=")
        if not sep or not name:
            raise click.BadParameter(
                f"{item!r} is not LOGGER=LEVEL (e.g. aiohttp=DEBUG)", param_hint=_where(ctx, param)
            )
        levels[name] = _parse_level(level, _where(ctx, param))
    return levels


def configure_logging(level: int, levels_for: dict[str, int], log_format: LogFormat = "text") -> None:
    """``level`` for spiffe-broker's loggers, WARNING (or ``level`` if higher) for every other library; lines as
    text or JSON (:mod:`broker._logging`), each with the request id of the request it belongs to.

    Does nothing when the process already has handlers (an embedding program or a test harness owns logging).
    """
    root = logging.getLogger()
    if root.handlers:
        return
    skip_unprinted_record_fields()
    handler = logging.StreamHandler()
    handler.setFormatter(formatter_for(log_format))
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    root.setLevel(max(level, logging.WARNING))
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
    for name, named_level in levels_for.items():
        logging.getLogger(name).setLevel(named_level)


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
    ("keys", "keys", "keys"),
    ("store", "store", "store"),
    ("audit", "audit", "audit"),
    ("quarantine", "quarantine", "quarantine"),
    ("clients", "clients", "clients"),
    ("exceptions", "exceptions", "exceptions"),
    ("status", "status", "status"),
    ("doctor", "doctor", "doctor"),
)


class LazyGroup(click.Group):
    """Imports a subcommand's module only when it runs (or is completed); runs it inside :func:`cli_errors`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, _, _ in SUBCOMMANDS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for name, module, attr in SUBCOMMANDS:
            if name == cmd_name:
                command = getattr(importlib.import_module(f"broker.cli.{module}"), attr)
                assert isinstance(command, click.Command)
                # click caches a command's help option with the names of the first context that asked; one that
                # ran outside this group (a test invoking it directly) would have cached "--help" alone.
                command._help_option = None
                return command
        return None

    def invoke(self, ctx: click.Context) -> Any:
        with cli_errors():
            return super().invoke(ctx)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """One program name (and so one completion variable) for the script and for ``python -m broker.cli``."""
        kwargs.setdefault("prog_name", PROG_NAME)
        kwargs.setdefault("complete_var", COMPLETE_VAR)
        return super().main(*args, **kwargs)


# Client and operator commands print their result like curl: only warnings and errors go to the log unless asked.
QUIET_COMMANDS = frozenset(
    {"token", "call", "entries", "keys", "store", "audit", "quarantine", "clients", "exceptions", "status", "doctor"}
)

LEVEL_HELP = (
    f"Level of spiffe-broker's own log lines: {', '.join(LEVELS)}  [default: INFO; WARNING for token, call, "
    "entries, keys, store, audit, quarantine, clients, exceptions, status and doctor]. Other libraries stay at "
    "WARNING: see --log-level-for."
)
LEVELS_FOR_HELP = (
    "Set one library's logger, e.g. --log-level-for aiohttp=DEBUG (repeatable; in the environment, separated by "
    "spaces or commas). Careful: hpack and grpc at DEBUG log request headers, tokens included."
)
EPILOG = f'Shell completion (bash; zsh and fish alike): eval "$({COMPLETE_VAR}=bash_source {PROG_NAME})"'


@click.group(PROG_NAME, cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(package_name="spiffe-broker", prog_name=PROG_NAME, message="%(prog)s %(version)s")
@click.option(
    "--log-level",
    envvar="SPIFFE_BROKER_LOG_LEVEL",
    show_envvar=True,
    metavar="LEVEL",
    callback=level_callback,
    help=LEVEL_HELP,
)
@click.option(
    "--log-level-for",
    "levels_for",
    multiple=True,
    envvar="SPIFFE_BROKER_LOG_LEVELS",
    show_envvar=True,
    metavar="LOGGER=LEVEL",
    callback=levels_for_callback,
    help=LEVELS_FOR_HELP,
)
@click.option(
    "--log-format",
    envvar="SPIFFE_BROKER_LOG_FORMAT",
    show_envvar=True,
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: one readable line per event; json: one JSON object per line (time, level, logger, message, "
    "request_id and the event's fields), for a log pipeline.",
)
@click.pass_context
def main(ctx: click.Context, log_level: int | None, levels_for: dict[str, int], log_format: LogFormat) -> None:
    """spiffe-broker: SPIFFE workload identity in, short-lived certificate-bound OAuth tokens out."""
    quiet = ctx.invoked_subcommand in QUIET_COMMANDS
    level = log_level if log_level is not None else (logging.WARNING if quiet else logging.INFO)
    configure_logging(level, levels_for, log_format)
