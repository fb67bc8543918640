"""The node half of ``spiffe-broker status``: what this node's sidecar is doing, from its ``GET /v1/status``.

Read over the sidecar's Unix socket (``--sidecar``; the same socket the apps use, so the caller needs the apps'
access to it): the X.509-SVID's SPIFFE ID and time to expiry, the token service's reachability and issuer, the
cached tokens by audience with their time to live, and the revocation feed's lag. Nothing in it is secret: the
sidecar's status document holds no token and no key.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from broker.config import unix_socket_path
from broker.errors import NetworkError

__all__ = ["node_lines", "read_node_status"]

STATUS_TIMEOUT = 5.0
HTTP_OK = 200


async def read_node_status(sidecar: str) -> dict[str, Any]:
    """The sidecar's ``/v1/status`` document (``sidecar``: a socket path or ``unix:///path``)."""
    path: Path = unix_socket_path(sidecar)
    timeout = aiohttp.ClientTimeout(total=STATUS_TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path)), timeout=timeout) as session,
            session.get("http://sidecar/v1/status") as response,
        ):
            document = await response.json(content_type=None)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise NetworkError(
            f"sidecar socket {path}: {reason}; is the sidecar running, and is this the socket its apps use?"
        ) from None
    if status != HTTP_OK or not isinstance(document, dict):
        error = document.get("error") if isinstance(document, dict) else None
        raise NetworkError(f"sidecar socket {path} answered /v1/status with HTTP {status} ({error or 'no status'}): "
                           "is it a spiffe-broker sidecar, and this process one of its local clients?")  # fmt: skip
    return document


def _until(iso: str, now: datetime) -> str:
    seconds = (datetime.fromisoformat(iso) - now).total_seconds()
    return f"{seconds:,.0f} s" if seconds > 0 else f"EXPIRED {-seconds:,.0f} s ago"


def _svid_line(document: dict[str, Any], now: datetime) -> str:
    svid = document.get("x509_svid")
    if not svid:
        return "X.509-SVID:    NONE: no SVID from the Workload API yet (spiffe-broker doctor names why)"
    return f"X.509-SVID:    {svid['spiffe_id']}, expires in {_until(svid['expires_at'], now)}"


def _service_line(document: dict[str, Any]) -> str:
    service = document.get("token_service") or {}
    state = service.get("state", "unknown")
    line = f"token service: {service.get('issuer', '?')} {state}"
    if service.get("last_error"):
        line += f" (last error: {service['last_error']})"
    return line


def _token_lines(document: dict[str, Any]) -> list[str]:
    tokens = document.get("tokens", [])
    if document.get("quarantined"):
        return ["cached tokens: none: this workload is QUARANTINED (spiffe-broker quarantine list)"]
    if not tokens:
        return ["cached tokens: none yet (a token is fetched on an app's first request)"]
    width = max(len(token["audience"]) for token in tokens)
    rows = [f"  {token['audience'].ljust(width)}  {token['expires_in']:>8,.0f} s" for token in tokens]
    return [f"cached tokens ({document.get('token_binding', 'mtls')}-bound), by audience, time to live:", *rows]


def _feed_line(document: dict[str, Any]) -> str:
    feed = document.get("revocation_feed")
    if feed is None:
        return "revocation feed: not followed"
    if not feed.get("advertised"):
        return "revocation feed: the token service advertises none"
    since = feed.get("seconds_since_contact")
    heard = "never heard from" if since is None else f"last heard {since:.1f} s ago"
    stale = ", STALE" if feed.get("stale") else ""
    return f"revocation feed: {heard}, {feed.get('lag', 0)} entries behind{stale}"


def node_lines(sidecar: str, document: dict[str, Any], now: datetime | None = None) -> list[str]:
    now = now or datetime.now(UTC)
    ready = "ready" if document.get("ready") else "NOT READY"
    body = [_svid_line(document, now), _service_line(document), *_token_lines(document), _feed_line(document)]
    return [f"sidecar {sidecar} ({ready})", *(f"  {line}" for line in body)]
