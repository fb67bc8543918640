from pathlib import Path

import pytest

from broker.config import load_settings, workload_api_address
from broker.errors import ConfigError


def test_flags_beat_environment_which_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "broker.toml"
    config.write_text('trust_domain = "file.org"\n[sidecar]\nhttp_port = 9000\n[server]\nport = 7000\n')
    monkeypatch.setenv("SPIFFE_BROKER_SIDECAR__HTTP_PORT", "9001")
    settings = load_settings(config, {"server": {"port": 7001}})
    assert settings.trust_domain == "file.org"
    assert settings.sidecar.http_port == 9001
    assert settings.server.port == 7001


def test_unknown_key_in_file_is_rejected_with_the_file_named(tmp_path: Path) -> None:
    config = tmp_path / "broker.toml"
    config.write_text("[sidecar]\nsokcet = '/x'\n")
    with pytest.raises(ConfigError, match=r"broker\.toml: sidecar\.sokcet"):
        load_settings(config)


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "broker.toml"
    config.write_text("[sidecar\n")
    with pytest.raises(ConfigError, match=r"broker\.toml"):
        load_settings(config)


def test_workload_api_address_falls_back_to_spiffe_endpoint_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", "unix:///run/spire/agent.sock")
    assert workload_api_address(None) == "unix:///run/spire/agent.sock"
    assert workload_api_address("/tmp/api.sock") == "unix:///tmp/api.sock"


def test_workload_api_address_without_any_source_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPIFFE_ENDPOINT_SOCKET", raising=False)
    with pytest.raises(ConfigError, match="SPIFFE_ENDPOINT_SOCKET"):
        workload_api_address(None)


def test_socket_mode_from_environment_is_octal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIFFE_BROKER_SIDECAR__SOCKET_MODE", "0660")
    assert load_settings().sidecar.socket_mode == 0o660
