#!/usr/bin/env python3
"""Generate docs/configuration.md from the settings model and the click commands; ``--check`` fails when stale.

    python scripts/gen-config-docs.py            # rewrite docs/configuration.md
    python scripts/gen-config-docs.py --check    # exit 1, with a diff, when the file differs (CI)

Nothing here is a hand list. Settings keys come from ``broker.config.BrokerSettings`` (every field, nested
sections and lists of tables included): TOML key, environment variable, type with its constraints, default and
the field's ``description``. Commands, options and arguments come from the ``spiffe-broker`` click group.

Which flag sets which key is found by running each command: the command is invoked once with only its required
parameters and once more per option, with ``load_settings`` and ``asyncio.run`` replaced by stubs that record
the flag overrides and stop the command there (so nothing is served, and the probe runs in a temporary directory
with no ``SPIFFE_*`` variables). A flag belongs to the keys whose override appears when the flag is given. This
follows every command's own mapping code, e.g. ``server --listen`` sets ``server.host`` and ``server.port``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import enum
import io
import os
import signal
import sys
import tempfile
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import click  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from pydantic.fields import FieldInfo  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

import broker.config  # noqa: E402
from broker.cli.main import main as cli_main  # noqa: E402

OUTPUT = ROOT / "docs" / "configuration.md"
PROGRAM = "spiffe-broker"
ENV_PREFIX = str(broker.config.BrokerSettings.model_config.get("env_prefix", ""))
ENV_DELIMITER = str(broker.config.BrokerSettings.model_config.get("env_nested_delimiter", "__"))
# String flags are probed with the first of these that the command accepts up to loading its settings.
STRING_SAMPLES = ("example.org", "127.0.0.1:1", "0600", "https://127.0.0.1:1", "spiffe://example.org/x", "unix:///x")
PROBE_SECONDS = 10


# ---------------------------------------------------------------- settings model


@dataclass(frozen=True)
class Key:
    """One settings key: ``path`` is the dotted TOML key (``[]`` marks a key inside an array of tables)."""

    path: str
    env: str
    type: str
    default: str
    description: str


def _as_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) in (list, tuple) and typing.get_args(annotation):
        item = typing.get_args(annotation)[0]
        return _as_model(item)
    return None


def type_name(annotation: Any) -> str:
    """A reader's name for a field type: ``path``, ``integer``, ``list of string``, ``one of "a", "b"``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(arg) for arg in args if arg is not type(None)]
        return " or ".join(names) + (" (optional)" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(toml_value(arg) for arg in args)
    if origin in (list, tuple, set, frozenset):
        return "list of " + type_name(args[0]) if args else "list"
    if origin is dict:
        return "table"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(toml_value(member.value) for member in annotation)
    readable: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    return readable.get(annotation) or str(getattr(annotation, "__name__", annotation))


def _constraints(info: FieldInfo) -> str:
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "min_length": "min length", "max_length": "max length"}
    found = [f"{symbol} {getattr(item, name)}" for item in info.metadata for name, symbol in symbols.items()
             if getattr(item, name, None) is not None]  # fmt: skip
    return f" ({', '.join(found)})" if found else ""


def toml_value(value: Any, *, octal: bool = False) -> str:
    """``value`` as it is written in the TOML file (file modes in octal, as for chmod)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and octal:
        return f"0o{value:o}"
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    if isinstance(value, enum.Enum):
        return toml_value(value.value)
    if isinstance(value, str | Path):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return str(value)


def _default(name: str, info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "see below"
    return toml_value(value, octal=name == "mode" or name.endswith("_mode"))


def settings_keys(model: type[BaseModel], path: str = "", env: str = ENV_PREFIX) -> Iterator[Key]:
    """Every key of ``model``, depth first in declaration order; a section yields its keys, not itself."""
    for name, info in model.model_fields.items():
        key = info.alias or name
        dotted, env_name = f"{path}{key}", f"{env}{key.upper()}"
        item_model, section = _list_item_model(info.annotation), _as_model(info.annotation)
        if section is not None:
            yield from settings_keys(section, dotted + ".", env_name + ENV_DELIMITER)
            continue
        typ = type_name(info.annotation) + _constraints(info)
        if item_model is not None:
            typ = f"array of tables `[[{dotted}]]`"
        yield Key(dotted, env_name, typ, _default(name, info), info.description or "")
        if item_model is not None:
            for sub in settings_keys(item_model, dotted + "[].", env=""):
                yield Key(sub.path, f"(in {env_name}, JSON)", sub.type, sub.default, sub.description)


# ---------------------------------------------------------------- commands and which flags set which keys


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
    help_text = (command.help or "").strip().split("\n\n")[0].replace("\n", " ")
    return Command(path, help_text, described)


# ---------------------------------------------------------------- rendering

HEADER = f"""# Configuration reference

<!-- Generated by scripts/gen-config-docs.py from broker/config.py and the {PROGRAM} commands: do not edit.
     Regenerate with `python scripts/gen-config-docs.py`; CI runs it with `--check`. -->

Each setting comes from, highest precedence first: a command-line flag, an environment variable
(`{ENV_PREFIX}<SECTION>{ENV_DELIMITER}<KEY>`, upper case), the TOML file named by `--config` (or
`{ENV_PREFIX}CONFIG`), the default. In TOML a section is a table: `server.port` is `port` under `[server]`.
Environment values are parsed as in TOML for scalars (file modes in octal, e.g. `0600`) and as JSON for lists
and tables. Each command reads only the sections it needs; the "Flags" column names the command with each flag.
"""

OTHER_ENV = f"""## Other environment variables

| Variable | Meaning |
|---|---|
| `{ENV_PREFIX}CONFIG` | The TOML config file, when `--config` is not given. |
| `{broker.config.ENDPOINT_SOCKET_ENV}` | The Workload API address (`unix:///path` or `tcp://ip:port`) when none is \
configured (SPIFFE Workload Endpoint §4). |
"""

COMPLETION = f"""## Shell completion

`{PROGRAM}` completes its commands, options and file names in bash (4.4 or newer), zsh and fish. Load it
in the current shell, or add the line to the shell's start-up file:

```sh
eval "$(_SPIFFE_BROKER_COMPLETE=bash_source {PROGRAM})"   # bash: ~/.bashrc
eval "$(_SPIFFE_BROKER_COMPLETE=zsh_source {PROGRAM})"    # zsh: ~/.zshrc
_SPIFFE_BROKER_COMPLETE=fish_source {PROGRAM} | source    # fish: ~/.config/fish/completions/{PROGRAM}.fish
```

To avoid running `{PROGRAM}` at every shell start, write the script to a file once and source that file:
`_SPIFFE_BROKER_COMPLETE=bash_source {PROGRAM} > ~/.{PROGRAM}-complete.bash`. Regenerate it after an upgrade.
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]


def _flags_by_key(commands: list[Command]) -> dict[str, list[tuple[str, Param]]]:
    found: dict[str, list[tuple[str, Param]]] = {}
    for command in commands:
        for param in command.params:
            for key in param.keys:
                found.setdefault(key, []).append((command.path.removeprefix(PROGRAM + " "), param))
    return found


def _strip_default(help_text: str) -> str:
    return help_text.split("  [default:")[0].strip()


def render_settings(keys: list[Key], commands: list[Command]) -> list[str]:
    flags = _flags_by_key(commands)
    sections: dict[str, list[Key]] = {}
    for key in keys:
        section = key.path.split(".")[0] if "." in key.path else ""
        sections.setdefault(section, []).append(key)
    lines = ["## Settings", ""]
    for section, members in sections.items():
        lines += [f"### {f'[{section}]' if section else 'Top level'}", ""]
        rows = []
        for key in members:
            users = flags.get(key.path, [])
            flag_text = "<br>".join(f"`{cmd} {p.names.split(', ')[-1].strip('`')}`" for cmd, p in users)
            description = key.description or next((_strip_default(p.help) for _, p in users if p.help), "")
            rows.append([f"`{key.path}`", f"`{key.env}`" if key.env.isupper() else key.env, flag_text,
                         key.type, f"`{key.default}`" if key.default not in ("unset", "required") else key.default,
                         description])  # fmt: skip
        lines += _table(["TOML key", "Environment variable", "Flags", "Type", "Default", "Description"], rows)
        lines.append("")
    return lines


def render_commands(commands: list[Command]) -> list[str]:
    lines = ["## Commands and options", ""]
    for command in commands:
        lines += [f"### `{command.path}`", "", command.help or "", ""]
        if not command.params:
            continue
        rows = [[p.names, p.type, f"`{p.default}`" if p.default else "", f"`{p.envvar}`" if p.envvar else "",
                 ", ".join(f"`{key}`" for key in p.keys), p.help] for p in command.params]  # fmt: skip
        lines += _table(["Parameter", "Type", "Default", "Environment variable", "Sets", "Help"], rows)
        lines.append("")
    return lines


def _help_note(root: click.Command) -> str:
    names = root.context_settings.get("help_option_names") or ["--help"]
    return f"Every command prints its usage with {' or '.join(f'`{name}`' for name in names)}.\n"


def render(model: type[BaseModel] = broker.config.BrokerSettings, root: click.Command = cli_main) -> str:
    commands = command_reference(root)
    keys = list(settings_keys(model))
    sections = [*render_settings(keys, commands), OTHER_ENV, *render_commands(commands)]
    parts = [HEADER, _help_note(root), *sections, COMPLETION]
    return "\n".join(parts).rstrip("\n") + "\n"


def check(path: Path, expected: str, show: Callable[[str], None]) -> bool:
    """True if ``path`` holds ``expected``; otherwise say so, with a short diff, through ``show``."""
    current = path.read_text() if path.exists() else ""
    if current == expected:
        return True
    diff = list(difflib.unified_diff(current.splitlines(), expected.splitlines(), str(path), "generated", lineterm=""))
    show(f"{path} is stale: run `python scripts/gen-config-docs.py` and commit the result")
    show("\n".join(diff[:60] + ([f"... ({len(diff) - 60} more diff lines)"] if len(diff) > 60 else [])))
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the file is not what would be generated")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"[default: {OUTPUT.relative_to(ROOT)}]")
    options = parser.parse_args(argv)
    text = render()
    if options.check:
        return 0 if check(options.output, text, lambda line: print(line, file=sys.stderr)) else 1
    options.output.write_text(text)
    print(f"wrote {options.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
