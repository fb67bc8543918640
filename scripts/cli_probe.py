"""Which command-line flag sets which settings key, found by running each ``spiffe-broker`` command (no hand list).

Each command is invoked once with only its required parameters and once more per option, with ``load_settings``
(wherever it was imported) and ``asyncio.run`` replaced by stubs that record the flag overrides and stop the
command there: nothing is served, nothing connects. The probe runs in a temporary directory, without ``SPIFFE_*``
variables, and each invocation is bounded by ``PROBE_SECONDS``. A flag belongs to the keys whose override
appears when the flag is given, so this follows every command's own mapping code (``server --listen`` sets
``server.host`` and ``server.port``). Used by ``gen-config-docs.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

import broker.config
from broker.cli.main import main as cli_main

__all__ = ["Command", "Param", "command_reference"]

PROGRAM = "spiffe-broker"
# String flags are probed with the first of these that the command accepts up to loading its settings.
STRING_SAMPLES = ("example.org", "127.0.0.1:1", "0600", "https://127.0.0.1:1", "spiffe://example.org/x", "unix:///x")
PROBE_SECONDS = 10


class _Stop(BaseException):
    """Raised by the stubs: the command got as far as loading settings or running its event loop."""


@dataclass
class Param:
    """One command-line parameter and the settings keys it sets (found by probing)."""

    names: str
    type: str
    default: str
    help: str
    envvar: str
    keys: list[str] = field(default_factory=list)


@dataclass
class Command:
    path: str
    help: str
    params: list[Param]


def _walk(command: click.Command, path: str, ctx: click.Context) -> Iterator[tuple[str, click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _walk(sub, f"{path} {name}", click.Context(sub, info_name=name, parent=ctx))


def _samples(param: click.Parameter, scratch: Path) -> tuple[str, ...]:
    kind = param.type
    if isinstance(kind, click.Path):
        return (str(scratch / ("sample-dir" if not kind.file_okay else "sample-file")),)
    if isinstance(kind, click.Choice):
        return (str(kind.choices[0]),)
    if isinstance(kind, click.IntRange | click.FloatRange):
        bound = kind.min if kind.min is not None else kind.max
        return (str(bound if bound is not None else 1),)
    if isinstance(kind, click.types.IntParamType | click.types.FloatParamType):
        return ("1",)
    return STRING_SAMPLES


def _args_for(param: click.Parameter, value: str) -> list[str]:
    if isinstance(param, click.Option):
        return [param.opts[0]] if param.is_flag else [param.opts[0], value]
    return [value]


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@contextlib.contextmanager
def _stubs(record: list[dict[str, Any]]) -> Iterator[None]:
    """``load_settings`` (wherever imported) records its overrides and stops; ``asyncio.run`` stops unrun."""

    def fake_load(config_file: Any = None, overrides: dict[str, Any] | None = None) -> Any:
        record.append(_flatten(overrides or {}))
        raise _Stop

    def fake_run(main: Any, **_: Any) -> Any:
        with contextlib.suppress(AttributeError):
            main.close()
        raise _Stop

    real_load = broker.config.load_settings
    patched = [m for m in list(sys.modules.values()) if getattr(m, "load_settings", None) is real_load]
    real_run = asyncio.run
    try:
        for module in patched:
            module.load_settings = fake_load  # type: ignore[attr-defined]
        asyncio.run = fake_run
        yield
    finally:
        asyncio.run = real_run
        for module in patched:
            module.load_settings = real_load  # type: ignore[attr-defined]


def _on_alarm(signum: int, frame: Any) -> None:
    raise TimeoutError("probe took too long")


def _invoke(command: click.Command, args: list[str]) -> set[str] | None:
    """The settings keys ``args`` override, or None if the command stopped before loading settings."""
    record: list[dict[str, Any]] = []
    sink = io.StringIO()
    signal.alarm(PROBE_SECONDS)
    try:
        with _stubs(record), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            command.main(args, prog_name=PROGRAM, standalone_mode=False)
    except _Stop:
        return set(record[0]) if record else set()
    except (Exception, SystemExit):  # a sample the command refuses: try the next one
        return None
    finally:
        signal.alarm(0)
    return None


def _probe(command: click.Command, param: click.Parameter, base: list[str], scratch: Path) -> set[str] | None:
    for value in _samples(param, scratch):
        keys = _invoke(command, base + _args_for(param, value))
        if keys is not None:
            return keys
    return None


def _required_args(command: click.Command, scratch: Path) -> list[str]:
    args: list[str] = []
    for param in command.params:
        if param.required:
            args += _args_for(param, _samples(param, scratch)[0])
    return args


def _shown_default(value: Any) -> bool:
    """A default worth printing: not unset (None, or click 8.2+'s ``UNSET``), off, empty or computed."""
    return value not in (None, False, (), getattr(click.core, "UNSET", None)) and not callable(value)


def _describe(param: click.Parameter) -> Param:
    if isinstance(param, click.Option):
        names = ", ".join(f"`{opt}`" for opt in param.opts + param.secondary_opts)
        default = param.default if _shown_default(param.default) else None
        envvar = param.envvar if isinstance(param.envvar, str) else ", ".join(param.envvar or ())
        help_text = param.help or ""
    else:
        names, default, envvar, help_text = f"`{param.human_readable_name}` (argument)", None, "", ""
    kind = "flag" if isinstance(param, click.Option) and param.is_flag else param.type.name
    if param.multiple or param.nargs == -1:
        kind += ", repeatable"
    if param.required:
        kind += ", required"
    return Param(names, kind, "" if default is None else str(default), help_text, envvar)


def command_reference(root: click.Command = cli_main) -> list[Command]:
    """Every command of ``root`` with its parameters and, for each, the settings keys it sets."""
    commands: list[Command] = []
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    saved = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith("SPIFFE_")}
    cwd = Path.cwd()
    try:
        with tempfile.TemporaryDirectory(prefix="gen-config-docs-") as tmp:
            scratch = Path(tmp)
            (scratch / "sample-file").write_text("")
            (scratch / "sample-dir").mkdir()
            os.chdir(scratch)
            for path, command in _walk(root, PROGRAM, click.Context(root, info_name=PROGRAM)):
                commands.append(_reference(command, path, scratch))
    finally:
        os.chdir(cwd)
        os.environ.update(saved)
        signal.signal(signal.SIGALRM, previous)
    return commands


def _reference(command: click.Command, path: str, scratch: Path) -> Command:
    params = [p for p in command.params if not (isinstance(p, click.Option) and p.hidden)]
    described = [_describe(p) for p in params]
    runnable = command.callback is not None and not isinstance(command, click.Group)
    base_args = _required_args(command, scratch)
    baseline = _invoke(command, base_args) if runnable else None
    if baseline is not None:
        for param, entry in zip(params, described, strict=True):
            if isinstance(param, click.Option) and not param.required and not param.is_eager:
                keys = _probe(command, param, base_args, scratch)
                entry.keys = sorted((keys or set()) - baseline)
    # The first paragraph, whitespace collapsed: Python 3.13 dedents docstrings when it compiles them, 3.11 does not.
    help_text = " ".join((command.help or "").strip().split("\n\n")[0].split())
    return Command(path, help_text, described)
