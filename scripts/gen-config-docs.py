#!/usr/bin/env python3
"""Generate docs/configuration.md from the settings model and the click commands; ``--check`` fails when stale.

    python scripts/gen-config-docs.py            # rewrite docs/configuration.md
    python scripts/gen-config-docs.py --check    # exit 1, with a diff, when the file differs (CI)

Nothing here is a hand list. Settings keys come from ``broker.config.BrokerSettings`` (every field, nested
sections and lists of tables included): TOML key, environment variable, type with its constraints, default and
the field's ``description``. Commands, options and arguments come from the ``spiffe-broker`` click group.

Which flag sets which key is found by running each command up to the point where it loads its settings
(``cli_probe.py`` beside this script), so it follows every command's own mapping code.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import sys
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import click  # noqa: E402
from cli_probe import PROGRAM, Command, Param, command_reference  # noqa: E402

import broker.config  # noqa: E402
from broker.cli.main import main as cli_main  # noqa: E402
from broker.config._model import MISSING, FieldSpec, Section  # noqa: E402

OUTPUT = ROOT / "docs" / "configuration.md"
ENV_PREFIX = broker.config.ENV_PREFIX
ENV_DELIMITER = broker.config.ENV_DELIMITER


# ---------------------------------------------------------------- settings model


@dataclass(frozen=True)
class Key:
    """One settings key: ``path`` is the dotted TOML key (``[]`` marks a key inside an array of tables)."""

    path: str
    env: str
    type: str
    default: str
    description: str


def _as_model(annotation: Any) -> type[Section] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None


def _list_item_model(annotation: Any) -> type[Section] | None:
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


def _constraints(info: FieldSpec) -> str:
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "min_length": "min length", "max_length": "max length"}
    found = [f"{symbol} {info.constraints[name]}" for name, symbol in symbols.items() if name in info.constraints]
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


def _default(name: str, info: FieldSpec) -> str:
    if info.default is MISSING:
        return "required"
    value = info.get_default()
    if value is None:
        return "unset"
    if isinstance(value, Section):
        return "see below"
    return toml_value(value, octal=name == "mode" or name.endswith("_mode"))


def settings_keys(model: type[Section], path: str = "", env: str = ENV_PREFIX) -> Iterator[Key]:
    """Every key of ``model``, depth first in declaration order; a section yields its keys, not itself."""
    for name, info in model.model_fields().items():
        key = name
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


def render(model: type[Section] = broker.config.BrokerSettings, root: click.Command = cli_main) -> str:
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
