"""Reading an admin request's input, strictly: a small JSON object (POST) or a few query parameters (GET).

Bodies (RFC 8259): ``Content-Type: application/json`` (``charset``, if any, UTF-8; RFC 8259 §8.1), no
``Content-Encoding`` (nothing is decompressed), at most ``max_body`` bytes, one JSON object whose members are
all among those the endpoint takes. A repeated member (RFC 8259 §4 leaves its meaning open), ``NaN`` or
``Infinity`` (not JSON), or any other value is refused. A POST has no query string. Query parameters: only the
names the endpoint takes, each once. Every refusal is ``invalid_request`` (400) and names what to send, and never
quotes the request (a misplaced secret must not come back in an answer or a log line).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import hdrs, web

from broker.errors import InvalidRequestError
from broker.web.body import read_bounded

__all__ = ["JSON_TYPE", "MAX_ADMIN_BODY", "read_json_object", "read_query"]

MAX_ADMIN_BODY = 4096
JSON_TYPE = "application/json"


async def read_json_object(request: web.Request, *, fields: frozenset[str], max_body: int) -> dict[str, Any]:
    """The body's members; ``invalid_request`` unless it is one small JSON object of known members."""
    if request.query_string:
        raise InvalidRequestError("an admin POST takes no query parameters: send them in the JSON body")
    if request.content_type != JSON_TYPE:
        raise InvalidRequestError(f"Content-Type must be {JSON_TYPE} (send a JSON object, e.g. {{}})")
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise InvalidRequestError("the JSON body must be UTF-8")
    if request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower() != "identity":
        raise InvalidRequestError("Content-Encoding is not supported: send the JSON body uncompressed")
    if request.content_length is not None and request.content_length > max_body:
        raise InvalidRequestError(f"request body is larger than {max_body} bytes")
    document = _strict_json(await read_bounded(request, max_body))
    if not isinstance(document, dict):
        raise InvalidRequestError("the body must be a JSON object, e.g. {}")
    if not set(document) <= fields:
        accepted = ", ".join(sorted(fields)) or "none"
        raise InvalidRequestError(f"the body has a member this endpoint does not take (it takes: {accepted})")
    return document


def read_query(request: web.Request, *, names: frozenset[str]) -> dict[str, str]:
    """The query parameters, each named in ``names`` and given once."""
    try:
        # the raw query: ``query_string`` is already percent-decoded once, and a value may hold an escaped "%"
        raw = request.rel_url.raw_query_string
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError("the query string is not valid UTF-8") from None
    query: dict[str, str] = {}
    for name, value in pairs:
        if name not in names:
            accepted = ", ".join(sorted(names)) or "none"
            raise InvalidRequestError(f"a query parameter this endpoint does not take (it takes: {accepted})")
        if name in query:
            raise InvalidRequestError(f"query parameter {name!r} is given more than once")
        query[name] = value
    return query


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for name, value in pairs:
        if name in members:
            raise InvalidRequestError("a member appears more than once in the body")
        members[name] = value
    return members


def _not_json(constant: str) -> Any:
    raise InvalidRequestError(f"{constant} is not JSON")


def _strict_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequestError("the body is not valid JSON (send a JSON object, e.g. {})") from None
