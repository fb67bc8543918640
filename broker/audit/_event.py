"""The base of every audit event: a frozen dataclass whose body is canonical JSON, scrubbed of anything shaped
like a token or a PEM block (the rules: :mod:`broker.audit.events`)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol

__all__ = ["MAX_TEXT", "REDACTED", "AuditEvent", "Event", "canonical_json", "scrub", "secret_shaped"]

MAX_TEXT = 300
REDACTED = "[redacted]"
_SECRET_SHAPES = re.compile(
    r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_.~+/=-]*"  # a JWS/JWE compact serialisation (header {" in base64url)
    r"|-----BEGIN[^-]*-----.*?(?:-----END[^-]*-----|$)",  # a PEM block, even a cut one
    re.DOTALL,
)


def secret_shaped(text: str) -> bool:
    """Whether ``text`` holds something :data:`_SECRET_SHAPES` matches (each match begins with one of two literals:
    looking for them first is several times cheaper than the regular expression on the usual body)."""
    return ("eyJ" in text or "-----BEGIN" in text) and _SECRET_SHAPES.search(text) is not None


class AuditEvent(Protocol):
    """What the trail records: a stable name and a canonical JSON body."""

    event: ClassVar[str]

    def body(self) -> bytes: ...


def canonical_json(value: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (non-ASCII kept as is); floats are not used in audit bodies."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def scrub(text: str) -> str:
    """``text`` with anything shaped like a token or a PEM block replaced, cut at :data:`MAX_TEXT` characters."""
    cleaned = _SECRET_SHAPES.sub(REDACTED, text)
    return cleaned if len(cleaned) <= MAX_TEXT else cleaned[: MAX_TEXT - 3] + "..."


def _plain(value: object) -> object:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {scrub(str(k)): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int):
        return value
    raise TypeError(f"an audit body holds strings, integers, booleans, lists and null, not {type(value).__name__}")


def _is_plain_text(value: object) -> bool:
    """A value the fast path may serialise as it is: an integer, None, or strings no longer than MAX_TEXT."""
    if isinstance(value, str):
        return len(value) <= MAX_TEXT
    if isinstance(value, tuple):
        return all(isinstance(v, str) and len(v) <= MAX_TEXT for v in value)
    return value is None or isinstance(value, int)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


@dataclass(frozen=True, slots=True)
class Event:
    event: ClassVar[str]

    def body(self) -> bytes:
        """The canonical JSON body. Fast path (every token issued takes it): when every value is plain and the
        serialised body has nothing shaped like a token or a PEM block, that serialisation is the body (it is what
        the per-field path would make); otherwise each string is scrubbed and cut on its own."""
        values = {name: getattr(self, name) for name in _field_names(type(self))}
        if all(_is_plain_text(v) for v in values.values()):
            text = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            if not secret_shaped(text):
                return text.encode()
        return canonical_json({name: _plain(value) for name, value in values.items()})
