"""Helpers for sidecar tests: the real token service on loopback, Unix socket paths, GETs to the sidecar.

The manual clock and the fake token service are :mod:`broker.testing`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.server.service import RunningTokenService, start_token_service
from broker.sidecar.retry import RetryPolicy
from broker.testing.policy import policy_rule, policy_yaml
from broker.tokens.keys import InMemoryKeyStore
from broker.tokens.policy import InMemoryPolicyStore, parse_policy

BROKER_ID = SpiffeId.parse("spiffe://example.org/spiffe-broker")
WEB_ID = SpiffeId.parse("spiffe://example.org/ns/shop/sa/web")
API = "https://api.example.org"
POLICY = policy_yaml(policy_rule(spiffe_id=WEB_ID, max_token_lifetime=300))
FAST_RETRY = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
Starter = Callable[..., Any]


async def wait_for(predicate: Callable[[], Any], timeout: float = 20.0) -> None:
    """Poll an async ``predicate`` until it is true (bounded by ``timeout``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def short_tmpdir() -> Iterator[Path]:
    """A private directory under /tmp with a short path (Unix socket paths must stay < 108 bytes)."""
    directory = tempfile.mkdtemp(dir="/tmp", prefix="sc-")
    try:
        yield Path(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class RealTokenService:
    """The project's token service on loopback; its issuer URL is where it listens."""

    service: RunningTokenService
    issuer: str
    port: int
    stopped: bool = False

    @property
    def issued_count(self) -> int:
        return self.service.issuer.issued_count

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.service.aclose()


async def start_real_token_service(broker_source: InMemorySvidSource, *, port: int | None = None) -> RealTokenService:
    port = port or free_port()
    issuer = f"https://127.0.0.1:{port}"
    service = await start_token_service(
        source=broker_source,
        policy_store=InMemoryPolicyStore(parse_policy(POLICY)),
        key_store=InMemoryKeyStore(),
        listen_host="127.0.0.1",
        listen_port=port,
        issuer=issuer,
    )
    return RealTokenService(service, issuer, port)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


async def sidecar_get(socket_path: Path, path: str, params: Any = None) -> Reply:
    """One GET to the sidecar over its Unix socket."""
    connector = aiohttp.UnixConnector(path=str(socket_path))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"http://sc{path}", params=params) as r,
    ):
        raw = await r.read()
        return Reply(r.status, dict(r.headers), json.loads(raw) if raw else None)
