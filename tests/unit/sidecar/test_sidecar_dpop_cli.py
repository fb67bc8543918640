"""``spiffe-broker sidecar --token-binding`` and ``[sidecar] token_binding``: what reaches the sidecar, what not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import broker.cli.sidecar as sidecar_command
from broker.cli.main import main
from broker.config import BrokerSettings, load_settings
from broker.errors import ConfigError

ISSUER = "https://127.0.0.1:8443"


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[BrokerSettings]:
    """Stop the command just before it runs: record the settings it would run with."""
    seen: list[BrokerSettings] = []

    async def run(settings: BrokerSettings, *args: Any) -> None:
        seen.append(settings)

    monkeypatch.setattr(sidecar_command, "_run", run)
    return seen


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["sidecar", "--token-service", ISSUER, *args])


def test_default_binding_is_mtls(captured: list[BrokerSettings]) -> None:
    result = invoke("--socket", "/tmp/sc.sock")
    assert result.exit_code == 0, result.output
    assert captured[0].sidecar.token_binding == "mtls"


def test_flag_selects_dpop(captured: list[BrokerSettings]) -> None:
    result = invoke("--socket", "/tmp/sc.sock", "--token-binding", "dpop")
    assert result.exit_code == 0, result.output
    assert captured[0].sidecar.token_binding == "dpop"


def test_config_file_selects_dpop(captured: list[BrokerSettings], tmp_path: Path) -> None:
    config = tmp_path / "broker.toml"
    config.write_text('[sidecar]\nsocket = "/tmp/sc.sock"\ntoken_binding = "dpop"\n')
    assert invoke("--config", str(config)).exit_code == 0
    assert captured[0].sidecar.token_binding == "dpop"


def test_an_unknown_binding_is_refused() -> None:
    with pytest.raises(ConfigError, match="token_binding"):
        load_settings(None, {"sidecar": {"token_binding": "bearer"}})
    result = invoke("--socket", "/tmp/sc.sock", "--token-binding", "bearer")
    assert result.exit_code != 0
    assert "'bearer' is not one of 'mtls', 'dpop'" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ("--once", "--token-file", "path=/tmp/t,audience=https://api.example.org"),
        ("--token-file", "path=/tmp/t,audience=https://api.example.org"),
    ],
    ids=["once", "token-files-only"],
)
def test_dpop_without_a_listener_is_refused(captured: list[BrokerSettings], args: tuple[str, ...]) -> None:
    result = invoke("--token-binding", "dpop", *args)
    assert result.exit_code != 0
    assert "token_binding = dpop needs --socket or --http-port" in result.output
    assert captured == []
