"""Configuration: the one place that reads the environment and config files.

Precedence, highest first: command-line flags, environment variables (``SPIFFE_BROKER_<SECTION>__<KEY>``, e.g.
``SPIFFE_BROKER_SIDECAR__SOCKET``), the TOML file named by ``--config`` (or ``SPIFFE_BROKER_CONFIG``), defaults.
``SPIFFE_ENDPOINT_SOCKET`` is the fallback for the Workload API address (SPIFFE Workload Endpoint §4), read only
in :func:`workload_api_address`.

The sections live in :mod:`broker.config.sections`, declared and checked with :mod:`broker.config._model`;
:mod:`broker.config._env` reads the ``SPIFFE_BROKER_*`` variables. Neither pydantic nor pydantic-settings is
imported: the sidecar loads its settings with the rest of this package and keeps them resident (issue 14).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from broker.config._env import EnvironmentJsonError, environment_values
from broker.config._model import ValidationError
from broker.config.sections import (
    UNIX_ADDRESS,
    AdminSettings,
    ApiKeySettings,
    AssertionSettings,
    BrokerSettings,
    DemoApiSettings,
    DpopSettings,
    EgressSettings,
    FeedSettings,
    IntrospectionSettings,
    KeyringSettings,
    LedgerSettings,
    MetricsSettings,
    ServerSettings,
    SidecarSettings,
    StoreSettings,
    WorkloadApiSettings,
)
from broker.errors import ConfigError

__all__ = [
    "ENV_DELIMITER",
    "ENV_PREFIX",
    "KEK_ENV",
    "AdminSettings",
    "ApiKeySettings",
    "AssertionSettings",
    "BrokerSettings",
    "DemoApiSettings",
    "DpopSettings",
    "EgressSettings",
    "FeedSettings",
    "IntrospectionSettings",
    "KeyringSettings",
    "LedgerSettings",
    "MetricsSettings",
    "ServerSettings",
    "SidecarSettings",
    "StoreSettings",
    "WorkloadApiSettings",
    "kek_from_environment",
    "load_settings",
    "normalize_address",
    "unix_socket_path",
    "workload_api_address",
]

ENDPOINT_SOCKET_ENV = "SPIFFE_ENDPOINT_SOCKET"
ENV_PREFIX = "SPIFFE_BROKER_"
ENV_DELIMITER = "__"
TCP_ADDRESS = re.compile(r"tcp://(\d{1,3}(?:\.\d{1,3}){3}:\d{1,5})")


def normalize_address(address: str) -> str:
    """SPIFFE Workload Endpoint §4: ``unix:///abs/path`` or ``tcp://ip:port``; a bare absolute path gets ``unix://``."""
    if address.startswith("/"):
        address = "unix://" + address
    if UNIX_ADDRESS.fullmatch(address) or TCP_ADDRESS.fullmatch(address):
        return address
    raise ConfigError(
        f"Workload API address {address!r} is neither 'unix:///absolute/path' nor 'tcp://<ip>:<port>' "
        "(SPIFFE Workload Endpoint §4)"
    )


def unix_socket_path(value: str | os.PathLike[str]) -> Path:
    """A Unix socket named by a path or by a ``unix:///absolute/path`` URL (as SPIRE and SPIFFE tools write it)."""
    text = os.fspath(value)
    if not text.startswith("unix:"):
        return Path(text)
    match = UNIX_ADDRESS.fullmatch(text)
    if match is None:
        raise ConfigError(f"{text!r} is not a Unix socket: write a path or unix:///absolute/path")
    return Path(match[1])


def workload_api_address(configured: str | None) -> str:
    """``configured`` if set, else ``$SPIFFE_ENDPOINT_SOCKET`` (the only place it is read), normalised."""
    value = configured or os.environ.get(ENDPOINT_SOCKET_ENV)
    if not value:
        raise ConfigError(f"no Workload API address: configure one or set {ENDPOINT_SOCKET_ENV}")
    return normalize_address(value)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; check --config (or SPIFFE_BROKER_CONFIG)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}; fix the file") from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the config file: {exc.strerror}; check --config and its permissions"
        ) from None


def _env_name(loc: tuple[str | int, ...]) -> str:
    """The variable a value at ``loc`` came from: the longest ``SPIFFE_BROKER_A__B`` prefix that is set."""
    names = {name.upper() for name in os.environ}
    for end in range(len(loc), 0, -1):
        name = ENV_PREFIX + "__".join(str(part) for part in loc[:end]).upper()
        if name in names:
            return name
    return ENV_PREFIX + "__".join(str(part) for part in loc).upper()


def _from_environment() -> dict[str, Any]:
    """The values set by ``SPIFFE_BROKER_*`` variables; an invalid one is named (its value is not repeated)."""
    try:
        values = environment_values(BrokerSettings, ENV_PREFIX, ENV_DELIMITER, os.environ)
        return BrokerSettings.model_validate(values).model_dump(exclude_unset=True)
    except ValidationError as exc:
        problems = "; ".join(f"{_env_name(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"environment variable {problems} (fix or unset it)") from None
    except EnvironmentJsonError as exc:  # a section given as JSON that does not parse, e.g. SPIFFE_BROKER_SIDECAR='{'
        name = _env_name((exc.field,))
        raise ConfigError(f"environment variable {name}: not a JSON object (or set {name}__<KEY> per key)") from None


KEK_ENV = "SPIFFE_BROKER_KEK"


def kek_from_environment() -> str | None:
    """The key-encryption key given in ``$SPIFFE_BROKER_KEK`` (base64url), or None; the only place it is read."""
    return os.environ.get(KEK_ENV) or None


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> BrokerSettings:
    """Build settings from defaults, the TOML file, the environment and flag ``overrides`` (in rising order).

    Environment values beat the file: the environment's values are checked on their own first (so a bad one is
    named by its variable), then laid over the file's; flag overrides go on top and the result is checked.
    """
    config_file = config_file or (
        Path(os.environ["SPIFFE_BROKER_CONFIG"]) if "SPIFFE_BROKER_CONFIG" in os.environ else None
    )
    file_values = _read_toml(config_file) if config_file else {}
    from_env = _from_environment()
    try:
        values = _merge(_merge(file_values, from_env), overrides or {})
        return BrokerSettings.model_validate(values)
    except ValidationError as exc:
        where = f"{config_file}: " if config_file else ""
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where}{problems}") from None
