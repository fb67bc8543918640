"""broker.config._model checks values as pydantic's lax mode did, with its messages (the config's contract).

Each expected message below was produced by the pydantic-based loader this module replaced, on the same input.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker.config import load_settings
from broker.config.sections import BrokerSettings, FeedSettings, SidecarSettings
from broker.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_broker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.upper().startswith("SPIFFE_BROKER_")]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("value", "port"),
    [("12", 12), (" 12 ", 12), ("1_000", 1000), ("12.0", 12), ("+5", 5), ("012", 12)],
    ids=["plain", "spaces", "underscore", "point-zero", "plus", "leading-zero"],
)
def test_an_integer_from_the_environment_is_read_as_pydantic_read_it(
    monkeypatch: pytest.MonkeyPatch, value: str, port: int
) -> None:
    monkeypatch.setenv("SPIFFE_BROKER_SERVER__PORT", value)
    assert load_settings().server.port == port


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SERVER__PORT", "1.5", "Input should be a valid integer, unable to parse string as an integer"),
        ("SERVER__PORT", "1e3", "Input should be a valid integer, unable to parse string as an integer"),
        ("SERVER__PORT", "1.", "Input should be a valid integer, unable to parse string as an integer"),
        ("SERVER__PORT", "99999", "Input should be less than or equal to 65535"),
        ("SIDECAR__PROBE_INTERVAL", "x", "Input should be a valid number, unable to parse string as a number"),
        ("SIDECAR__PROBE_INTERVAL", "0", "Input should be greater than 0"),
        ("SIDECAR__ONCE", " true ", "Input should be a valid boolean, unable to interpret input"),
        ("SIDECAR__TOKEN_BINDING", "jwt", "Input should be 'mtls' or 'dpop'"),
        ("FEED__HEARTBEAT", "0", "Input should be greater than 0"),
        ("SIDECAR__SOKCET", "/x", "Extra inputs are not permitted"),
        ("SIDECAR", '{"socket": 1}', "Input is not a valid path for <class 'pathlib.Path'>"),
        ("SIDECAR", "[1]", "Input should be a valid dictionary or instance of SidecarSettings"),
        ("INTROSPECTION__AUDIENCES", '{"a": "b"}', "Input should be a valid list"),
        ("SIDECAR__TOKEN_FILES", '[{"path": "/x"}]', "Field required"),
        ("SERVER__TLS_READ_BUFFER", "5", "Value error, must be 0 (Python's default) or 4096-1048576 bytes"),
    ],
)
def test_an_invalid_environment_value_gets_pydantic_s_message(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(f"SPIFFE_BROKER_{variable}", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.description.startswith("environment variable SPIFFE_BROKER_")
    assert f": {message} (fix or unset it)" in caught.value.description


@pytest.mark.parametrize("variable", ["SIDECAR", "ADMIN__SPIFFE_IDS"])
def test_a_variable_that_should_be_json_and_is_not_names_its_section(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(f"SPIFFE_BROKER_{variable}", "{nope")
    section = variable.split("__")[0]
    with pytest.raises(ConfigError, match=f"SPIFFE_BROKER_{section}: not a JSON object"):
        load_settings()


def test_per_key_variables_win_over_a_json_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIFFE_BROKER_SIDECAR", '{"socket": "/a", "http_port": 5}')
    monkeypatch.setenv("SPIFFE_BROKER_SIDECAR__SOCKET", "/b")
    settings = load_settings()
    assert (settings.sidecar.socket, settings.sidecar.http_port) == (Path("/b"), 5)


def test_variables_of_other_commands_under_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIFFE_BROKER_KEK", "k")
    monkeypatch.setenv("SPIFFE_BROKER_LOG_LEVEL", "DEBUG")
    assert load_settings() == BrokerSettings()


def test_every_problem_in_a_file_is_reported_at_once_with_its_location(tmp_path: Path) -> None:
    config = tmp_path / "broker.toml"
    config.write_text("[[sidecar.token_files]]\naudience = ''\npath = 1\nmode = 'x'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert caught.value.description == (
        f"{config}: sidecar.token_files.0.path: Input is not a valid path for <class 'pathlib.Path'>; "
        "sidecar.token_files.0.audience: String should have at least 1 character; "
        "sidecar.token_files.0.mode: Value error, invalid literal for int() with base 8: 'x'"
    )


def test_a_section_is_built_from_keywords_and_copied_with_updates() -> None:
    feed = FeedSettings(heartbeat=0.2, spiffe_ids=["spiffe://example.org/x"])
    assert feed.heartbeat == 0.2 and feed.max_followers == 10_000
    assert feed.model_copy(update={"retry_after": 7}).retry_after == 7
    assert feed.model_dump(exclude_unset=True) == {"heartbeat": 0.2, "spiffe_ids": ["spiffe://example.org/x"]}
    with pytest.raises(ValueError, match="greater than 0"):
        FeedSettings(heartbeat=0)


def test_defaults_are_not_shared_between_instances() -> None:
    first, second = SidecarSettings(), SidecarSettings()
    first.token_files.append(SidecarSettings.TokenFile(path=Path("/t"), audience="a"))
    assert second.token_files == []
