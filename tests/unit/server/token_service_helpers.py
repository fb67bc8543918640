"""Helpers for token service tests: real TLS on loopback with SVIDs from dev CAs.

Trust domains: ``example.org`` (the broker and its clients) and ``other.org`` (federated: its bundle is loaded).
"""

from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from broker.identity.memory import InMemorySvidSource, SvidIssuer
from broker.identity.spiffeid import SpiffeId
from broker.identity.svid import X509Svid
from broker.server.service import RunningTokenService
from broker.testing import WEB_POLICY

BROKER_ID = SpiffeId.parse("spiffe://example.org/broker")
CLIENT_ID = SpiffeId.parse("spiffe://example.org/ns/shop/sa/web")
ISSUER = "https://broker.test:8443"
API = "https://api.example.org"
POLICY = WEB_POLICY


@dataclass
class Broker:
    """A running token service plus what tests need to talk to it and inspect it."""

    service: RunningTokenService
    source: InMemorySvidSource
    policy_path: Path
    state_dir: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.service.port}"

    def snapshot(self) -> tuple[int, bytes, bytes]:
        """Issued count, policy file and key files: what "no state change" compares."""
        keys = b"".join(p.read_bytes() for p in sorted(self.state_dir.glob("token-signing-key*")))
        return self.service.issuer.issued_count, self.policy_path.read_bytes(), keys


def client_context(svid: X509Svid | None, *roots: SvidIssuer) -> ssl.SSLContext:
    """A client TLS context presenting ``svid`` (or no certificate) and trusting ``roots``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    for root in roots:
        ctx.load_verify_locations(cadata=root.x509_bundle().to_pem().decode())
    if svid is not None:
        with tempfile.TemporaryDirectory(dir="/tmp") as directory:
            cert, key = Path(directory) / "c.pem", Path(directory) / "k.pem"
            cert.write_bytes(svid.chain_pem())
            key.write_bytes(svid.key_pem())
            ctx.load_cert_chain(cert, key)
    return ctx


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


async def request(
    ctx: ssl.SSLContext,
    method: str,
    url: str,
    *,
    data: Any = None,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
) -> Reply:
    """One request on a fresh connection; returns status, headers and the JSON body (or text)."""
    connector = aiohttp.TCPConnector(ssl=ctx, force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, url, data=data, headers=headers, json=json_body) as resp,
    ):
        text = await resp.text()
        try:
            body: Any = await resp.json(content_type=None)
        except ValueError:
            body = text
        return Reply(resp.status, dict(resp.headers), body)
