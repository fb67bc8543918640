#!/usr/bin/env python3
"""What the broker itself reads in rendered manifests (the Helm chart's output), checked with its own code.

For every manifest file given:

- each ConfigMap ``broker.toml`` loads with the broker's settings loader (unknown sections or keys are errors);
- each ConfigMap ``policy.yaml`` loads with the broker's policy loader;
- each broker container (image ``*spiffe-broker*`` without a ``command``) has arguments the real CLI parses,
  and its literal ``SPIFFE_BROKER_*`` environment loads with the settings loader.

tests/unit/deploy does the same for the plain manifests under deploy/k8s/; this script covers templated output,
which no file in the repository holds. Needs the broker package (the project's virtualenv).
Exit status: 0 when everything passed, 1 on any finding.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import yaml

from broker.cli.main import main as cli
from broker.config import load_settings
from broker.tokens.policy import parse_policy


@contextmanager
def broker_environment(values: dict[str, str]) -> Iterator[None]:
    """Exactly ``values`` as the process's SPIFFE_BROKER_* environment, restored afterwards."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("SPIFFE_BROKER_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(values)
    try:
        yield
    finally:
        for key in values:
            os.environ.pop(key, None)
        os.environ.update(saved)


def cli_errors(args: list[str]) -> list[str]:
    try:
        with click.Context(cli) as parent:
            command = cli.get_command(parent, args[0])
            if command is None:
                return [f"unknown subcommand {args[0]!r}"]
            if isinstance(command, click.Group):
                parent = click.Context(command, info_name=args[0], parent=parent)
                command, args = command.get_command(parent, args[1]), args[1:]
                if command is None:
                    return [f"unknown subcommand {args[0]!r}"]
            with command.make_context(args[0], args[1:], parent=parent):
                pass
    except click.ClickException as exc:
        return [f"the CLI refuses {' '.join(args)!r}: {exc.format_message()}"]
    return []


def settings_errors(toml_text: str | None, env: dict[str, str]) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp, broker_environment(env):
        config = None
        if toml_text is not None:
            config = Path(tmp) / "broker.toml"
            config.write_text(toml_text, encoding="utf-8")
        try:
            load_settings(config, {})
        except Exception as exc:  # the loader's own errors (ConfigError, validation errors) are findings
            return [f"the settings loader refuses it: {exc}"]
    return []


def check_object(body: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    if body.get("kind") == "ConfigMap":
        data = body.get("data") or {}
        if "broker.toml" in data:
            errors += [f"data.broker.toml: {e}" for e in settings_errors(data["broker.toml"], {})]
        if "policy.yaml" in data:
            try:
                parse_policy(data["policy.yaml"], source="policy.yaml")
            except Exception as exc:
                errors.append(f"data.policy.yaml: the policy loader refuses it: {exc}")
    pod = ((body.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
        if "spiffe-broker" not in str(container.get("image", "")) or container.get("command"):
            continue
        where = f"container {container.get('name')}"
        errors += [f"{where}: {e}" for e in cli_errors([str(a) for a in container.get("args") or []])]
        env = {
            e["name"]: str(e["value"])
            for e in container.get("env") or []
            if e.get("name", "").startswith("SPIFFE_BROKER_") and "value" in e and e["name"] != "SPIFFE_BROKER_CONFIG"
        }
        env.pop("SPIFFE_BROKER_LOG_FORMAT", None)  # a CLI option (checked below), not a setting
        fmt = next(
            (e.get("value") for e in container.get("env") or [] if e.get("name") == "SPIFFE_BROKER_LOG_FORMAT"), None
        )
        if fmt is not None and fmt not in {"text", "json"}:
            errors.append(f"{where}: SPIFFE_BROKER_LOG_FORMAT={fmt!r} is neither text nor json")
        errors += [f"{where}: environment: {e}" for e in settings_errors(None, env)]
    return errors


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    findings = 0
    objects = 0
    for path in paths:
        for body in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not isinstance(body, dict):
                continue
            objects += 1
            label = f"{path}: {body.get('kind')}/{(body.get('metadata') or {}).get('name')}"
            for error in check_object(body):
                print(f"ERROR {label}: {error}")
                findings += 1
    print(f"broker inputs: {objects} objects, {findings} errors")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
