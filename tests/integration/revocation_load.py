"""Load from many SPIFFE IDs across two replicas, and verifiers that follow a replica's revocation feed.

:class:`ManyClients` holds one keep-alive mTLS client per load SPIFFE ID; :func:`run_load` makes each of them
alternate between the replicas, and counts every failure of an ID that is not (yet) the target of a trial.
:func:`feed_verifier` builds a resource server's verifier that follows one replica's JWKS *and* its revocation
feed (:class:`~broker.verify.feed.RevocationFeedFollower`), with the shared issuer's URLs sent to that replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from broker.errors import InvalidTokenError
from broker.verify.feed import RevocationFeedFollower
from broker.verify.jwks import RemoteJwksProvider
from broker.verify.verifier import AccessTokenVerifier
from tests.integration.replicas import ISSUER, Replica, ReplicaSet, TokenClient, token_kid

__all__ = ["LoadTally", "ManyClients", "feed_verifier", "refused_within", "run_load"]

LOAD_PREFIX = "spiffe://example.org/ns/load/w"


@dataclass
class LoadTally:
    """What the load saw; ``targets`` are the IDs whose refusal a trial expects (their failures are not counted)."""

    targets: set[str] = field(default_factory=set)
    issued: int = 0
    verified: int = 0
    failures: list[str] = field(default_factory=list)
    command_seconds: list[float] = field(default_factory=list)


@dataclass
class ManyClients:
    replicas: ReplicaSet
    count: int
    clients: dict[str, TokenClient] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for n in range(self.count):
            spiffe_id = f"{LOAD_PREFIX}{n}"
            self.clients[spiffe_id] = self.replicas.client(spiffe_id)

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()


async def _one_id(
    spiffe_id: str, client: TokenClient, replicas: list[Replica], verifier: AccessTokenVerifier, tally: LoadTally,
    stop: asyncio.Event, pause: float,
) -> None:  # fmt: skip
    turn, token = hash(spiffe_id), ""
    while not stop.is_set():
        replica, turn = replicas[turn % 2], turn + 1
        try:
            token = ""
            token = await client.token(replica)
            tally.issued += 1
            await verifier.verify(token, client.certificate_der)
            tally.verified += 1
        except Exception as exc:  # every failure of an ID that is not a target counts
            if spiffe_id not in tally.targets:
                kid = token_kid(token) if token else None
                tally.failures.append(f"{spiffe_id} at {replica.name} (kid {kid}): {type(exc).__name__}: {exc}")
        await asyncio.sleep(pause)


def run_load(
    clients: ManyClients, replicas: list[Replica], verifier: AccessTokenVerifier, tally: LoadTally,
    stop: asyncio.Event, pause: float = 0.1,
) -> list[asyncio.Task[None]]:  # fmt: skip
    """One task per load ID: a token from each replica in turn, verified by ``verifier``, then ``pause`` s."""
    return [
        asyncio.create_task(_one_id(spiffe_id, client, replicas, verifier, tally, stop, pause))
        for spiffe_id, client in clients.clients.items()
    ]


class _FeedResponse:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk

    async def read_body(self, limit: int) -> bytes:
        return await self._response.content.read(limit)


def feed_verifier(
    client: TokenClient, replica: Replica, audience: str, *, jwks_max_age: float = 300.0
) -> tuple[AccessTokenVerifier, RevocationFeedFollower]:
    """A verifier following ``replica``'s JWKS (cached ``jwks_max_age`` s) and its revocation feed; start the
    follower (``async with``) before verifying."""

    def local(url: str) -> str:
        assert url.startswith(ISSUER), url
        return replica.url + url.removeprefix(ISSUER)

    async def fetch_json(url: str) -> object:
        async with client.session.get(local(url)) as response:
            assert response.status == 200
            return await response.json()

    @contextlib.asynccontextmanager
    async def open_feed(url: str, headers: Mapping[str, str]) -> AsyncIterator[_FeedResponse]:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with client.session.get(local(url), headers=dict(headers), timeout=timeout) as response:
            yield _FeedResponse(response)

    jwks = RemoteJwksProvider(issuer=ISSUER, fetch_json=fetch_json, max_age=jwks_max_age, min_refetch_interval=0.2)
    follower = RevocationFeedFollower(issuer=ISSUER, fetch_json=fetch_json, open_feed=open_feed, jwks=jwks)
    verifier = AccessTokenVerifier(issuer=ISSUER, audience=audience, jwks=jwks, leeway=0, revocations=follower)
    return verifier, follower


async def refused_within(
    verifier: AccessTokenVerifier, token: str, certificate_der: bytes, since: float, timeout: float
) -> float:
    """Seconds from ``since`` (a ``time.monotonic()``) until ``verifier`` refuses ``token`` (polled every 5 ms)."""
    while True:
        try:
            await verifier.verify(token, certificate_der)
        except InvalidTokenError:
            return time.monotonic() - since
        assert time.monotonic() - since < timeout, f"the verifier still accepts the token after {timeout:g} s"
        await asyncio.sleep(0.005)


def summary(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    rank = max(0, -(-len(ordered) * 99 // 100) - 1)
    return {"n": len(ordered), "p50": ordered[len(ordered) // 2], "p99": ordered[rank], "max": ordered[-1]}
