"""The ``SPIFFE_BROKER_*`` environment variables as settings values, read as pydantic-settings read them.

* Names are matched without regard to case: ``SPIFFE_BROKER_SERVER__PORT`` and ``spiffe_broker_server__port``.
* A scalar top-level field is its variable's string (``SPIFFE_BROKER_TRUST_DOMAIN``); unknown names are ignored
  (``SPIFFE_BROKER_CONFIG``, ``SPIFFE_BROKER_KEK`` and the log variables belong to others).
* A section, list or table is JSON (``SPIFFE_BROKER_SIDECAR='{"socket": "/run/s"}'``), and/or one variable per
  key below it, ``__`` between the levels (``SPIFFE_BROKER_SIDECAR__SOCKET``); the per-key ones win. A key whose
  field is itself a list or table is JSON too (``SPIFFE_BROKER_ADMIN__SPIFFE_IDS='["spiffe://..."]'``).
* JSON that does not parse is :class:`EnvironmentJsonError`, naming the top-level field (never the value).

The strings are checked and converted by the section classes, as file values are.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from typing import Any

from broker.config._model import Section

__all__ = ["EnvironmentJsonError", "environment_values"]


class EnvironmentJsonError(ValueError):
    """A variable for a section, list or table holds text that is not JSON; ``field`` is the top-level field."""

    def __init__(self, field: str) -> None:
        super().__init__(f"error parsing value for field {field!r} from the environment")
        self.field = field


def _is_complex(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin in (list, dict) or (isinstance(annotation, type) and issubclass(annotation, Section))


def _field(annotation: Any, key: str) -> Any:
    """The annotation of ``key`` inside a section annotation, or None (not a section, or no such field)."""
    if isinstance(annotation, type) and issubclass(annotation, Section):
        for name, spec in annotation.model_fields().items():
            if name.lower() == key:
                return spec.annotation
    return None


def _deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


def _explode(field: str, annotation: Any, prefix: str, delimiter: str, env: Mapping[str, str]) -> dict[str, Any]:
    """``PREFIX<key>__<key>=value`` variables as a nested dict (keys in lower case)."""
    result: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(prefix):
            continue
        *keys, last = name[len(prefix) :].split(delimiter)
        target, level = annotation, result
        for key in keys:
            target = _field(target, key)
            found = level.setdefault(key, {})
            level = found if isinstance(found, dict) else {}
        target = _field(target, last)
        parsed: Any = value
        if value and target is not None and _is_complex(target):
            try:
                parsed = json.loads(value)
            except ValueError:
                raise EnvironmentJsonError(field) from None
        level[last] = parsed
    return result


def environment_values(model: type[Section], prefix: str, delimiter: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """The values ``environ`` sets for ``model``'s fields, as strings or parsed JSON, nested as the sections."""
    env = {name.lower(): value for name, value in environ.items()}
    values: dict[str, Any] = {}
    for name, spec in model.model_fields().items():
        variable = (prefix + name).lower()
        raw = env.get(variable)
        if not _is_complex(spec.annotation):
            if raw is not None:
                values[name] = raw
            continue
        if raw is None:
            exploded = _explode(name, spec.annotation, variable + delimiter, delimiter, env)
            if exploded:
                values[name] = exploded
            continue
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise EnvironmentJsonError(name) from None
        if isinstance(parsed, dict):
            parsed = _deep_update(parsed, _explode(name, spec.annotation, variable + delimiter, delimiter, env))
        values[name] = parsed
    return values
