"""A revocation feed served over real TLS on loopback from the in-memory store, and a raw SSE reader for tests.

Shared by the server, verify and sidecar tests: the server is the real route (:func:`add_revocation_feed`) behind
the hardened runner with the broker's TLS context; the metadata route advertises it (or not) the way the token
service does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp import web

from broker.config import FeedSettings
from broker.devtools.devca import DevCA
from broker.events.feed import FEED_PATH, METADATA_KEY, SseEvent, SseParser
from broker.events.revocations import LogEntry, RevocationEvent, TokenRevoked
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.context import server_ssl_context
from broker.server.feed import RevocationFeed, add_revocation_feed
from broker.store import latest_version
from broker.store.memory import MemoryStore
from broker.web import HardenedAppRunner, ListenerLimits, start_tcp_site
from broker.web.errors import error_middleware
from tests.unit.server.token_service_helpers import BROKER_ID, CLIENT_ID, client_context

FAST = FeedSettings(heartbeat=0.2)


def later(seconds: float = 3600) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def revoked(n: int) -> list[RevocationEvent]:
    return [TokenRevoked(f"jti-{i}", later()) for i in range(n)]


@dataclass
class FeedServer:
    ca: DevCA
    store: MemoryStore
    feed: RevocationFeed
    runner: HardenedAppRunner
    port: int = 0
    advertise: bool = True
    contexts: dict[str, ssl.SSLContext] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.issuer + FEED_PATH

    def context(self, path: str | None = "/ns/shop/sa/web") -> ssl.SSLContext:
        """A client context with an X.509-SVID for ``spiffe://example.org<path>`` (None: no certificate)."""
        key = path or ""
        if key not in self.contexts:
            spiffe_id = SpiffeId.parse(f"spiffe://example.org{path}") if path is not None else None
            svid = None if spiffe_id is None else self.ca.issue_x509_svid(spiffe_id, ttl=600)
            self.contexts[key] = client_context(svid, self.ca)
        return self.contexts[key]

    async def append(self, events: list[RevocationEvent]) -> tuple[LogEntry, ...]:
        return await self.store.revocations.append(events)


@contextlib.asynccontextmanager
async def feed_server(
    ca: DevCA,
    *,
    settings: FeedSettings = FAST,
    store: MemoryStore | None = None,
    advertise: bool = True,
    limits: ListenerLimits | None = None,
) -> AsyncIterator[FeedServer]:
    store = store or MemoryStore(latest_version())
    source = InMemorySvidSource(ca, BROKER_ID)
    app = web.Application(middlewares=[error_middleware])
    feed = add_revocation_feed(
        app, log_store=store.revocations, changes=store.changes, bundles=source.x509_bundles, settings=settings
    )
    runner = HardenedAppRunner(app, limits=limits)
    server = FeedServer(ca, store, feed, runner, advertise=advertise)

    async def metadata(request: web.Request) -> web.Response:
        document = {"issuer": server.issuer, "token_endpoint": server.issuer + "/token"}
        if server.advertise:
            document[METADATA_KEY] = server.url
        return web.json_response(document)

    app.router.add_get("/.well-known/oauth-authorization-server", metadata)
    context = server_ssl_context(source, require_client_cert=False)
    await runner.setup()
    try:
        server.port = await start_tcp_site(runner, "127.0.0.1", 0, ssl_context=context)
        yield server
    finally:
        await runner.cleanup()
        context.detach()


async def until(check: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``check`` until it holds (the state it watches has no event to await)."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 (followers and indexes change without an event a test could await)
            await asyncio.sleep(0.005)


@dataclass
class Stream:
    status: int
    headers: dict[str, str]
    items: list[SseEvent | str]
    body: bytes = b""

    @property
    def events(self) -> list[SseEvent]:
        return [item for item in self.items if isinstance(item, SseEvent)]


async def read_stream(
    context: ssl.SSLContext,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    until: int = 1,
    comments: bool = False,
    timeout: float = 5.0,
) -> Stream:
    """GET ``url`` and read until ``until`` events (or comments too, with ``comments``) arrived, or the stream ends."""
    connector = aiohttp.TCPConnector(ssl=context, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url, headers=headers) as response:
        stream = Stream(response.status, dict(response.headers), [])
        if response.status != 200:
            stream.body = await response.read()
            return stream
        parser = SseParser()
        async with asyncio.timeout(timeout):
            async for chunk in response.content.iter_any():
                stream.items += parser.feed(chunk)
                if len(stream.items if comments else stream.events) >= until:
                    break
        return stream


__all__ = ["CLIENT_ID", "FAST", "FeedServer", "Stream", "feed_server", "later", "read_stream", "revoked", "until"]
