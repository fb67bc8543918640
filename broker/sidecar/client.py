"""Asking a sidecar for a token over its Unix socket (what ``spiffe-broker token`` and ``call`` do)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from broker.errors import BrokerError

__all__ = ["SidecarError", "SidecarToken", "fetch_token"]


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
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise SidecarError("unreachable", f"cannot reach the sidecar at {socket_path}: {exc}", status=0) from None
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise SidecarError("bad_response", f"the sidecar answered HTTP {status} without JSON", status=status)
    if status != 200 or not isinstance(body.get("access_token"), str):
        error, description = str(body.get("error", "error")), str(body.get("error_description", ""))
        raise SidecarError(error, description or f"HTTP {status}", status=status)
    return SidecarToken(
        access_token=body["access_token"],
        token_type=str(body.get("token_type", "Bearer")),
        expires_in=int(body.get("expires_in", 0)),
        issued_token_type=body.get("issued_token_type"),
        scope=body.get("scope"),
    )
