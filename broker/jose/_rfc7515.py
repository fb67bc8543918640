"""JWS Compact Serialization (RFC 7515 §7.1): the one parser, with strict JSON and canonical base64url.

Parsing runs in stages so each caller keeps its own order of checks:

1. :func:`split_compact`: a string of at most 16 KiB, exactly three non-empty base64url parts without padding
   (RFC 7515 §2, §7.1); JWE (five parts) and the JSON serialization (§7.2) are named in the refusal.
2. :func:`b64url_decode`: unpadded base64url; with ``canonical`` (the default) only the canonical spelling, so
   one signed token has one spelling.
3. :func:`json_object`: RFC 7515 §5.2 steps 2-4 / RFC 7519 §7.2 step 10: a UTF-8 JSON object, no duplicate
   members, no ``NaN``/``Infinity``, nesting at most :data:`MAX_JSON_DEPTH` levels (the same bound on every
   Python: the ``json`` module's own limit is the recursion limit on 3.11 and a larger C-stack limit on 3.12+).

:func:`parse_compact` runs them all (header, payload, signature) and returns a :class:`CompactJws` whose signature
is *not yet verified*: verify it with :func:`broker.jose.jws.verify` before trusting anything in it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from broker.jose.errors import Base64urlError, JsonObjectError, MalformedJwsError, TokenTooLongError

__all__ = [
    "MAX_TOKEN_LENGTH",
    "CompactJws",
    "CompactParts",
    "b64url_decode",
    "b64url_encode",
    "json_object",
    "parse_compact",
    "split_compact",
]

MAX_TOKEN_LENGTH = 16384
MAX_JSON_DEPTH = 32  # JOSE headers and JWT claims nest 2-3 levels
# Three base64url parts (RFC 7515 §2: no padding); fullmatch, so no trailing newline slips through.
_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")


class CompactParts(NamedTuple):
    """The three still-encoded parts of a compact JWS (a tuple: cheap on the hot path)."""

    header: str
    payload: str
    signature: str

    @property
    def signing_input(self) -> bytes:
        """RFC 7515 §5.1 step 8: ``ASCII(BASE64URL(header) || '.' || BASE64URL(payload))``."""
        return f"{self.header}.{self.payload}".encode("ascii")


@dataclass(frozen=True, slots=True)
class CompactJws:
    """A parsed (not yet verified) compact JWS whose header and payload are JSON objects."""

    header: dict[str, Any]
    payload: dict[str, Any] = field(repr=False)
    signing_input: bytes = field(repr=False)
    signature: bytes = field(repr=False)


def b64url_encode(data: bytes) -> str:
    """RFC 7515 §2: base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str, *, canonical: bool = True) -> bytes:
    """Decode unpadded base64url (RFC 7515 §2); with ``canonical``, refuse any spelling but the canonical one."""
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise Base64urlError("token part is not valid base64url") from None
    if canonical and base64.urlsafe_b64encode(raw).rstrip(b"=") != segment.encode("ascii"):
        raise Base64urlError("token part is not canonical base64url")
    return raw


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateMemberError
    return result


class _DuplicateMemberError(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_object(raw: bytes, part: str) -> dict[str, Any]:
    """A strict UTF-8 JSON object (see the module docstring); :class:`JsonObjectError` naming ``part`` if not."""
    if _nesting_exceeds(raw, MAX_JSON_DEPTH):
        raise JsonObjectError(part, "not UTF-8 JSON")
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_members, parse_constant=_no_constant)
    except _DuplicateMemberError:
        raise JsonObjectError(part, "not a JSON object without duplicate members", duplicate=True) from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise JsonObjectError(part, "not UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise JsonObjectError(part, "not a JSON object")
    return value


def _nesting_exceeds(raw: bytes, limit: int) -> bool:
    """Whether JSON text ``raw`` nests arrays/objects deeper than ``limit``.

    Fast path: fewer opening brackets in all than ``limit`` (strings included) cannot nest deeper. Otherwise one
    pass that skips string contents (RFC 8259 §7: a string ends at an unescaped quote).
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def _shape_error(token: str) -> MalformedJwsError:
    parts = token.count(".") + 1
    if token.lstrip().startswith("{"):
        return MalformedJwsError("JWS JSON serialization is not accepted (JWT-SVID §5.1)")
    if parts == 5:
        return MalformedJwsError("JWE tokens are not accepted: a JWT-SVID is a JWS (JWT-SVID §2)")
    if parts != 3:
        return MalformedJwsError(f"token has {parts} dot-separated parts, not 3")
    return MalformedJwsError("token has an empty part or a character outside the base64url alphabet")


def split_compact(token: object) -> CompactParts:
    """RFC 7515 §7.1: the three base64url parts of ``token``, still encoded."""
    if not isinstance(token, str) or not token:
        raise MalformedJwsError("token is empty or not a string")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenTooLongError(f"token is longer than {MAX_TOKEN_LENGTH} characters")
    match = _COMPACT.fullmatch(token)
    if match is None:
        raise _shape_error(token)
    return CompactParts._make(match.groups())


def parse_compact(token: str, *, canonical: bool = True) -> CompactJws:
    """Split and decode a compact JWS (header, then payload, then signature); nothing is verified."""
    header_b64, payload_b64, signature_b64 = split_compact(token)
    header = json_object(b64url_decode(header_b64, canonical=canonical), "header")
    payload = json_object(b64url_decode(payload_b64, canonical=canonical), "payload")
    signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
    return CompactJws(header, payload, signing_input, b64url_decode(signature_b64, canonical=canonical))
