"""docs/configuration.md is generated from the settings model and the click commands, and CI fails when stale."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Literal

import click
import pytest

from broker.config import load_settings
from broker.config._model import Field, Section

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen-config-docs.py"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through the module
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_checked_in_configuration_reference_is_fresh() -> None:
    result = _run("--check")

    assert result.returncode == 0, result.stderr


def test_check_fails_naming_the_fix_when_the_file_is_stale(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    assert _run("--output", str(stale)).returncode == 0
    stale.write_text(stale.read_text().replace("SPIFFE_BROKER_SERVER__PORT", "SPIFFE_BROKER_PORT"))

    result = _run("--check", "--output", str(stale))

    assert result.returncode == 1
    assert f"{stale} is stale: run `python scripts/gen-config-docs.py`" in result.stderr
    assert "+| `server.port` | `SPIFFE_BROKER_SERVER__PORT`" in result.stderr


def test_check_fails_when_the_file_is_missing(tmp_path: Path) -> None:
    result = _run("--check", "--output", str(tmp_path / "missing.md"))

    assert result.returncode == 1
    assert "is stale" in result.stderr


def test_the_reference_covers_keys_env_vars_flags_and_completion(gen: ModuleType) -> None:
    text = gen.render()

    assert "| `server.port` | `SPIFFE_BROKER_SERVER__PORT` | `dev --server-port`<br>`server --listen` |" in text
    assert "| `sidecar.socket_mode` | `SPIFFE_BROKER_SIDECAR__SOCKET_MODE` | `sidecar --socket-mode` |" in text
    assert "`0o600`" in text
    for shell in ("bash", "zsh", "fish"):
        assert f"_SPIFFE_BROKER_COMPLETE={shell}_source spiffe-broker" in text


def test_probing_ties_each_flag_to_the_keys_its_command_sets(gen: ModuleType) -> None:
    commands = {command.path: command for command in gen.command_reference()}

    def keys(path: str, flag: str) -> list[str]:
        return next(param.keys for param in commands[path].params if f"`{flag}`" in param.names)

    assert keys("spiffe-broker server", "--listen") == ["server.host", "server.port"]
    assert keys("spiffe-broker dev", "--x509-ttl") == ["workload_api.x509_svid_ttl"]
    assert keys("spiffe-broker sidecar", "--socket-mode") == ["sidecar.socket_mode"]
    assert keys("spiffe-broker sidecar", "--token-service") == []


class _Inner(Section):
    path: Path
    mode: int = 0o640


class _Section(Section):
    level: Literal["low", "high"] = Field(default="low", description="How loud.")
    items: list[_Inner] = []


class _Model(Section):
    name: str = "x"
    section: _Section = _Section()


def test_a_new_section_and_array_of_tables_need_no_hand_list(gen: ModuleType) -> None:
    keys = {key.path: key for key in gen.settings_keys(_Model)}

    assert list(keys) == ["name", "section.level", "section.items", "section.items[].path", "section.items[].mode"]
    assert keys["section.level"].env == "SPIFFE_BROKER_SECTION__LEVEL"
    assert keys["section.level"].type == 'one of "low", "high"'
    assert keys["section.level"].description == "How loud."
    assert keys["section.items"].type == "array of tables `[[section.items]]`"
    assert keys["section.items[].path"].default == "required"
    assert keys["section.items[].mode"].default == "0o640"


def test_a_new_command_is_probed_without_running_it(gen: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    monkeypatch.setenv("SPIFFE_BROKER_SECTION__NAME", "from-the-environment")
    cwd = Path.cwd()

    async def serve() -> None:
        ran.append("served")

    @click.group()
    def root() -> None:
        """Root."""

    @root.command("serve")
    @click.option("--port", type=click.IntRange(0, 65535), help="Port  [default: 1]")
    @click.option("--label", help="Not a setting.")
    def serve_command(port: int | None, label: str | None) -> None:
        """Serve things."""
        load_settings(None, {"section": {"port": port}} if port is not None else {})
        asyncio.run(serve())

    (command,) = [c for c in gen.command_reference(root) if c.path.endswith("serve")]

    assert {param.names: param.keys for param in command.params} == {"`--port`": ["section.port"], "`--label`": []}
    assert ran == []
    assert Path.cwd() == cwd
    assert os.environ["SPIFFE_BROKER_SECTION__NAME"] == "from-the-environment"
