"""Asking a sidecar for a token over its Unix socket (what ``spiffe-broker token`` and ``call`` do).

When the socket answers something that is not HTTP/1.1, the client looks at the first bytes the peer sends and
says what it is: an HTTP/2 server (gRPC: the SPIFFE Workload API, the SPIRE Server API) opens every connection
with a SETTINGS frame (RFC 9113 §3.4, frame layout §4.1: 24-bit length, type 0x4, flags, stream 0). No byte the
peer sent is ever repeated in the message.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from broker.errors import BrokerError
from broker.identity.spiffetls.connector import NETWORK_ERRORS

__all__ = ["SidecarError", "SidecarToken", "fetch_token", "looks_like_http2", "parse_token_response"]

_SETTINGS_FRAME = 0x4
_PROBE_TIMEOUT = 2.0
_MAX_RESPONSE = 1 << 20
_PROBE = b"GET /healthz HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n"


class SidecarError(BrokerError):
    """The sidecar refused or could not be reached; ``error``/``status`` are the sidecar's (0 if unreachable)."""

    def __init__(self, error: str, description: str, *, status: int) -> None:
        super().__init__(description)
        self.error = error
        self.status = status


@dataclass(frozen=True)
class SidecarToken:
    """The sidecar's ``/v1/token`` response."""

    access_token: str = field(repr=False)
    token_type: str
    expires_in: int
    issued_token_type: str | None
    scope: str | None


async def fetch_token(
    *, socket_path: Path, audience: str, scope: str | None = None, timeout: float = 30.0
) -> SidecarToken:
    """``GET /v1/token?audience=...&scope=...`` on the sidecar's Unix socket."""
    params = {"audience": audience, **({"scope": scope} if scope else {})}
    try:
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(socket_path)), timeout=aiohttp.ClientTimeout(total=timeout)
            ) as session,
            session.get("http://sidecar/v1/token", params=params) as response,
        ):
            status, raw = response.status, await response.read()
    except aiohttp.ClientResponseError:  # the answer was not HTTP/1.1 at all
        raise SidecarError("not_a_sidecar", await _not_http_reason(socket_path), status=0) from None
    except NETWORK_ERRORS as exc:
        if looks_like_http2(await _first_bytes(socket_path)):
            # An HTTP/2 server may close before the request is read (uvloop reports the reset first).
            raise SidecarError("not_a_sidecar", await _not_http_reason(socket_path), status=0) from None
        reason = str(exc) or type(exc).__name__
        raise SidecarError(
            "unreachable",
            f"cannot reach the sidecar at {socket_path}: {reason}; is it running on that socket?",
            status=0,
        ) from None
    return parse_token_response(status, raw)


def sidecar_answer(status: int, raw: bytes, member: str, *, limit: int = _MAX_RESPONSE) -> tuple[dict[str, Any], str]:
    """The sidecar's JSON answer and its non-empty string ``member`` (``access_token``, ``proof``); otherwise
    :class:`SidecarError` with the sidecar's error code and description, or ``bad_response`` without JSON."""
    try:
        body = json.loads(raw) if len(raw) <= limit else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise SidecarError("bad_response", f"the sidecar answered HTTP {status} without JSON", status=status)
    value = body.get(member)
    if status != 200 or not isinstance(value, str) or not value:
        error, description = str(body.get("error", "error")), str(body.get("error_description", ""))
        raise SidecarError(error, description or f"HTTP {status}", status=status)
    return body, value


def parse_token_response(status: int, raw: bytes) -> SidecarToken:
    """The sidecar's JSON answer as a :class:`SidecarToken`, or :class:`SidecarError` with its error code."""
    body, token = sidecar_answer(status, raw, "access_token")
    expires_in = body.get("expires_in", 0)
    scope, issued = body.get("scope"), body.get("issued_token_type")
    return SidecarToken(
        access_token=token,
        token_type=str(body.get("token_type", "Bearer")),
        expires_in=expires_in if isinstance(expires_in, int) else 0,
        issued_token_type=issued if isinstance(issued, str) else None,
        scope=scope if isinstance(scope, str) else None,
    )


def looks_like_http2(head: bytes) -> bool:
    """True when ``head`` starts with an HTTP/2 SETTINGS frame on stream 0 (RFC 9113 §3.4, §6.5)."""
    return len(head) >= 9 and head[3] == _SETTINGS_FRAME and head[5:9] == bytes(4)


async def _first_bytes(socket_path: Path) -> bytes:
    """Up to 9 bytes the peer sends after an HTTP/1.1 request; empty if it sends nothing in time."""
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(str(socket_path))
            try:
                writer.write(_PROBE)
                try:
                    return await reader.readexactly(9)
                except asyncio.IncompleteReadError as short:
                    return short.partial
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return b""


async def _not_http_reason(socket_path: Path) -> str:
    if looks_like_http2(await _first_bytes(socket_path)):
        return (
            f"{socket_path} is not a spiffe-broker sidecar socket (it speaks HTTP/2: looks like a gRPC/Workload API"
            " socket); pass the socket the sidecar serves (spiffe-broker sidecar --socket)"
        )
    return f"{socket_path} did not answer HTTP/1.1: pass the socket the sidecar serves (spiffe-broker sidecar --socket)"
