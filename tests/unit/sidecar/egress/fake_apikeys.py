"""A fake token service for the egress proxy: the three API-key calls of :mod:`broker.apikeys.grant`, over mTLS.

It answers exactly the wire form (``catalog_to_wire``, ``grant_to_wire``, ``report_from_wire``) behind the
broker's SVID for ``spiffe://example.org/spiffe-broker``, requiring the client's X.509-SVID, so the sidecar's real
:class:`~broker.sidecar.egress.client.ApiKeyClient` is what talks to it. Tests switch it off (``available``: 503),
make it refuse one exception (``refused``: 403 ``access_denied``), and read what it granted and was told.

It also serves its RFC 8414 metadata and a revocation feed (:mod:`broker.events.feed`: hello, a snapshot, then the
entries :meth:`FakeApiKeys.append` adds, and heartbeats), so a sidecar can follow it for withdrawals and quarantines
independently of any store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

from broker.apikeys.grant import (
    Catalog,
    CatalogEntry,
    EgressReport,
    Grant,
    catalog_to_wire,
    grant_to_wire,
    report_from_wire,
)
from broker.apikeys.model import Delivery, Presentation, Target
from broker.events.feed import (
    CONTENT_TYPE,
    FEED_PATH,
    METADATA_KEY,
    entry_event,
    heartbeat_comment,
    hello_event,
    snapshot_event,
)
from broker.events.revocations import LogEntry, RevocationEvent
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffetls.context import server_ssl_context

SECRET = "sk_live_51Hx9TESTsecretKEYvalue0123456789"
OTHER_SECRET = "other-key-Zq8w7e6r5t4y3u2i1o0p"


def entry(name: str, host: str, port: int, *, prefix: str = "/", kind: str = "header",
          slot: str = "Authorization", template: str = "Bearer {secret}") -> CatalogEntry:  # fmt: skip
    return CatalogEntry(name, Target(host, port, prefix), Presentation(kind, slot, template), Delivery.INJECT)


@dataclass
class FakeApiKeys:
    secrets: dict[str, str] = field(default_factory=dict)
    entries: dict[str, CatalogEntry] = field(default_factory=dict)
    available: bool = True
    refused: set[str] = field(default_factory=set)
    hold: float = 60.0
    version: int = 1
    port: int = 0
    catalog_calls: int = 0
    granted: list[str] = field(default_factory=list)
    reports: list[EgressReport] = field(default_factory=list)
    log: list[LogEntry] = field(default_factory=list)
    _appended: asyncio.Event = field(default_factory=asyncio.Event)

    def append(self, events: list[RevocationEvent]) -> None:
        """Add entries to the revocation log; every follower gets them at once."""
        for event in events:
            self.log.append(LogEntry(len(self.log) + 1, event))
        self._appended.set()
        self._appended = asyncio.Event()

    async def metadata(self, request: web.Request) -> web.Response:
        document = {
            "issuer": self.issuer,
            "token_endpoint": self.issuer + "/token",
            METADATA_KEY: self.issuer + FEED_PATH,
        }
        return web.json_response(document)

    async def feed(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})
        await response.prepare(request)
        sent = len(self.log)
        await response.write(hello_event("fake", sent) + snapshot_event("fake", sent, self.log[:sent]))
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self._appended.wait()
            for item in self.log[sent:]:
                await response.write(entry_event(item))
            sent = len(self.log)
            await response.write(heartbeat_comment(sent))

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def add(self, item: CatalogEntry, secret: str) -> None:
        self.entries[item.name] = item
        self.secrets[item.name] = secret

    def refusals(self) -> list[tuple[str | None, str]]:
        return [(r.name, r.reason) for report in self.reports for r in report.refusals]

    def uses(self) -> dict[tuple[str, int, str], int]:
        counts: dict[tuple[str, int, str], int] = {}
        for report in self.reports:
            for use in report.uses:
                key = (use.name, use.version, use.target)
                counts[key] = counts.get(key, 0) + use.count
        return counts

    async def catalog(self, request: web.Request) -> web.Response:
        self.catalog_calls += 1
        if not self.available:
            return _error(503, "temporarily_unavailable")
        return web.json_response(catalog_to_wire(Catalog(tuple(self.entries.values()))), headers=_NO_STORE)

    async def grant(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.granted.append(name)
        if not self.available:
            return _error(503, "temporarily_unavailable")
        if name not in self.entries:
            return _error(404, "not_found", "no such exception")
        if name in self.refused:
            return _error(403, "access_denied", f"exception {name} is suspended")
        item, now = self.entries[name], time.time()
        grant = Grant(name, self.version, self.secrets[name], item.target, item.presentation, item.delivery,
                      datetime.fromtimestamp(now, UTC), datetime.fromtimestamp(now + self.hold, UTC))  # fmt: skip
        return web.json_response(grant_to_wire(grant), headers=_NO_STORE)

    async def report(self, request: web.Request) -> web.Response:
        if not self.available:
            return _error(503, "temporarily_unavailable")
        self.reports.append(report_from_wire(await request.json()))
        return web.Response(status=204)


_NO_STORE = {"Cache-Control": "no-store"}


def _error(status: int, error: str, description: str = "") -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status, headers=_NO_STORE)


@contextlib.asynccontextmanager
async def fake_apikeys(broker_source: InMemorySvidSource) -> AsyncIterator[FakeApiKeys]:
    fake = FakeApiKeys()
    app = web.Application()
    app.router.add_get("/.well-known/oauth-authorization-server", fake.metadata)
    app.router.add_get(FEED_PATH, fake.feed)
    app.router.add_get("/v1/apikeys", fake.catalog)
    app.router.add_post("/v1/apikeys/report", fake.report)
    app.router.add_post("/v1/apikeys/{name}/grant", fake.grant)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    context = server_ssl_context(broker_source)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    fake.port = int(runner.addresses[0][1])
    try:
        yield fake
    finally:
        await runner.cleanup()
        context.detach()
