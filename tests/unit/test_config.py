from pathlib import Path

import pytest

from broker.config import load_settings, unix_socket_path, workload_api_address
from broker.errors import ConfigError
from broker.web.tls_buffer import DEFAULT_TLS_READ_BUFFER


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


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        pytest.param("SPIFFE_BROKER_SERVER__PORT", "http", "valid integer", id="bad-value"),
        pytest.param("spiffe_broker_server__port", "99999", "less than or equal", id="lowercase-name"),
        pytest.param("SPIFFE_BROKER_SIDECAR__SOKCET", "/x", "Extra inputs", id="unknown-key"),
        pytest.param("SPIFFE_BROKER_SIDECAR", '{"socket": 1}', "valid path", id="json-section"),
        pytest.param("SPIFFE_BROKER_SIDECAR", "{", "not a JSON object", id="json-section-unparsable"),
    ],
)
def test_an_invalid_environment_variable_is_named_and_its_value_not_repeated(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.description.startswith(f"environment variable {variable.upper()}: ")
    assert message in caught.value.description
    assert value not in caught.value.description.removeprefix(f"environment variable {variable.upper()}")


def test_a_missing_config_file_says_where_it_was_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found; check --config"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("value", "path"),
    [
        pytest.param("/run/sidecar/token.sock", "/run/sidecar/token.sock", id="absolute-path"),
        pytest.param("token.sock", "token.sock", id="relative-path"),
        pytest.param("unix:///run/sidecar/token.sock", "/run/sidecar/token.sock", id="unix-url"),
    ],
)
def test_a_unix_socket_is_a_path_or_a_unix_url(value: str, path: str) -> None:
    assert unix_socket_path(value) == Path(path)


@pytest.mark.parametrize("value", ["unix://token.sock", "unix:token.sock", "unix:///run/x.sock?q=1"])
def test_a_unix_url_without_an_absolute_path_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="unix:///absolute/path"):
        unix_socket_path(value)


@pytest.mark.parametrize(
    ("written", "expected"),
    [("/run/broker/token.sock", "/run/broker/token.sock"), ("unix:///run/broker/token.sock", "/run/broker/token.sock")],
    ids=["path", "unix-url"],
)
def test_sidecar_socket_is_a_path_or_a_unix_url(written: str, expected: str) -> None:
    settings = load_settings(None, {"sidecar": {"socket": written}})
    assert settings.sidecar.socket == Path(expected)


def test_sidecar_socket_url_that_is_not_unix_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unix:///absolute/path"):
        load_settings(None, {"sidecar": {"socket": "unix://relative"}})


@pytest.mark.parametrize("mode", ["0644", "0602", "0666"])
def test_a_token_file_mode_granting_others_access_is_refused_as_a_credential(tmp_path: Path, mode: str) -> None:
    config = tmp_path / "broker.toml"
    config.write_text(f'[[sidecar.token_files]]\npath = "/run/t"\naudience = "api"\nmode = "{mode}"\n')
    with pytest.raises(ConfigError, match="it holds a credential"):
        load_settings(config)


def test_a_token_file_mode_for_owner_and_group_is_accepted(tmp_path: Path) -> None:
    config = tmp_path / "broker.toml"
    config.write_text('[[sidecar.token_files]]\npath = "/run/t"\naudience = "api"\nmode = "0640"\n')
    assert load_settings(config).sidecar.token_files[0].mode == 0o640


def test_the_introspection_section_reads_the_allow_list_and_per_caller_audiences(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "broker.toml"
    config.write_text(
        '[introspection]\nspiffe_ids = ["spiffe://example.org/rs"]\n'
        '[introspection.audiences]\n"spiffe://example.org/rs" = ["https://api.example.org"]\n'
    )
    settings = load_settings(config)
    assert settings.introspection.spiffe_ids == ["spiffe://example.org/rs"]
    assert settings.introspection.audiences == {"spiffe://example.org/rs": ["https://api.example.org"]}
    monkeypatch.setenv("SPIFFE_BROKER_INTROSPECTION__SPIFFE_IDS", '["spiffe://example.org/other"]')
    assert load_settings(config).introspection.spiffe_ids == ["spiffe://example.org/other"]
    assert load_settings(None).introspection.spiffe_ids == ["spiffe://example.org/other"]
    monkeypatch.delenv("SPIFFE_BROKER_INTROSPECTION__SPIFFE_IDS")
    assert load_settings(None).introspection.spiffe_ids == []
    config.write_text("[introspection]\nspiffe_id = []\n")
    with pytest.raises(ConfigError, match=r"introspection\.spiffe_id"):
        load_settings(config)


@pytest.mark.parametrize("value", ["0", "4096", "17408", "1048576"])
def test_the_token_service_tls_read_buffer_is_0_or_a_size_from_4_kib_to_1_mib(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SPIFFE_BROKER_SERVER__TLS_READ_BUFFER", value)
    assert load_settings().server.tls_read_buffer == int(value)


@pytest.mark.parametrize("value", ["1", "4095", "1048577", "-1"])
def test_a_tls_read_buffer_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SPIFFE_BROKER_SERVER__TLS_READ_BUFFER", value)
    with pytest.raises(ConfigError, match=r"SERVER__TLS_READ_BUFFER.*4096-1048576"):
        load_settings()


def test_the_default_tls_read_buffer_is_the_listener_s_one_record_size() -> None:
    """broker.config may not import broker.web: this ties the two constants."""
    assert load_settings().server.tls_read_buffer == DEFAULT_TLS_READ_BUFFER


def test_the_egress_socket_takes_a_unix_url_like_the_sidecar_socket() -> None:
    from broker.config import EgressSettings

    assert EgressSettings.model_validate({"socket": "unix:///run/egress.sock"}).socket == Path("/run/egress.sock")
    with pytest.raises(ValueError, match="unix:///absolute/path"):
        EgressSettings.model_validate({"socket": "unix:relative.sock"})
