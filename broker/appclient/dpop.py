"""DPoP for apps (RFC 9449 §7) with a sidecar run with ``token_binding = "dpop"``: the app holds no private key.

The sidecar's tokens are bound to the workload's SVID key (``cnf.jkt``, RFC 9449 §6.1), and the sidecar signs a
proof for each request the app makes (``POST /v1/dpop-proof``). The app sends both::

    Authorization: DPoP <access token>
    DPoP: <proof for this method and URL, with ath = hash of the token>

:func:`dpop_request_headers` (asyncio) and :func:`~broker.appclient.sync.dpop_request_headers_sync` give those two
headers for one request: a token from ``/v1/token``, then a proof for it. If the SVID rotated in between, the
sidecar answers ``stale_token`` (the token is bound to the previous key) and they fetch the token once more.
:func:`fetch_dpop_proof` / :func:`~broker.appclient.sync.fetch_dpop_proof_sync` ask for a proof alone, e.g. with
the ``nonce`` a resource server sent in ``DPoP-Nonce`` (§9). A proof is single-use (its ``jti``, §11.1): ask for a
new one per request.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from broker.appclient.sidecar import SidecarError, fetch_token, sidecar_answer
from broker.identity.spiffetls.connector import NETWORK_ERRORS

__all__ = [
    "STALE_TOKEN",
    "dpop_headers",
    "dpop_request_headers",
    "fetch_dpop_proof",
    "parse_proof_response",
    "proof_request_body",
]

STALE_TOKEN = "stale_token"  # noqa: S105 - the sidecar's error code, not a secret
_MAX_RESPONSE = 1 << 16
_PATH = "/v1/dpop-proof"


def proof_request_body(method: str, url: str, access_token: str | None = None, nonce: str | None = None) -> bytes:
    """The JSON body of ``POST /v1/dpop-proof``."""
    document = {"method": method, "url": url}
    if access_token is not None:
        document["access_token"] = access_token
    if nonce is not None:
        document["nonce"] = nonce
    return json.dumps(document).encode()


def parse_proof_response(status: int, raw: bytes) -> str:
    """The proof from the sidecar's answer, or :class:`SidecarError` with the sidecar's error code."""
    return sidecar_answer(status, raw, "proof", limit=_MAX_RESPONSE)[1]


def dpop_headers(access_token: str, proof: str) -> dict[str, str]:
    """RFC 9449 §7.1: ``Authorization: DPoP <token>`` and ``DPoP: <proof>``."""
    return {"Authorization": f"DPoP {access_token}", "DPoP": proof}


async def fetch_dpop_proof(
    *,
    socket_path: str | Path,
    method: str,
    url: str,
    access_token: str | None = None,
    nonce: str | None = None,
    timeout: float = 30.0,
) -> str:
    """``POST /v1/dpop-proof`` on the sidecar's Unix socket: a proof for ``method url`` (``ath`` for the token)."""
    body = proof_request_body(method, url, access_token, nonce)
    connector = aiohttp.UnixConnector(path=str(socket_path))
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(
                f"http://localhost{_PATH}", data=body, headers={"Content-Type": "application/json"}
            ) as response,
        ):
            status, raw = response.status, await response.read()
    except NETWORK_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        raise SidecarError("unreachable", f"cannot reach the sidecar at {socket_path}: {reason}", status=0) from None
    return parse_proof_response(status, raw)


async def dpop_request_headers(
    *,
    socket_path: str | Path,
    method: str,
    url: str,
    audience: str,
    scope: str | None = None,
    nonce: str | None = None,
    timeout: float = 30.0,
) -> dict[str, str]:
    """The ``Authorization`` and ``DPoP`` headers for one request to ``url`` (see the module docstring)."""

    async def attempt() -> dict[str, str]:
        token = await fetch_token(socket_path=Path(socket_path), audience=audience, scope=scope, timeout=timeout)
        proof = await fetch_dpop_proof(socket_path=socket_path, method=method, url=url,
                                       access_token=token.access_token, nonce=nonce, timeout=timeout)  # fmt: skip
        return dpop_headers(token.access_token, proof)

    try:
        return await attempt()
    except SidecarError as exc:
        if exc.error != STALE_TOKEN:
            raise
    return await attempt()  # the SVID rotated between token and proof: the token now is bound to the new key
