"""The app's side of egress tests: requests through the egress proxy as an ``HTTP_PROXY`` client, on a local route
over the Unix socket, or as raw bytes on the loopback port; and the proxy started against the fakes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from broker.identity.memory import InMemorySvidSource
from broker.sidecar.egress.client import ApiKeyClient
from broker.sidecar.egress.service import EgressOptions, RunningEgress, build_proxy, start_egress
from tests.unit.server.feed_helpers import until
from tests.unit.sidecar.egress.fake_apikeys import FakeApiKeys
from tests.unit.sidecar.egress.target_server import LocalResolver
from tests.unit.sidecar.sidecar_helpers import BROKER_ID


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        return str(self.json()["error"])

    def text(self) -> str:
        """Everything the app received (status line aside), to look for a secret in."""
        return "\n".join(f"{k}: {v}" for k, v in self.headers.items()) + "\n" + self.body.decode("latin-1")


@dataclass
class App:
    """An app of the pod, calling out through the sidecar's egress proxy."""

    egress: RunningEgress

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.egress.port}"

    async def forward(self, method: str, url: str, **kwargs: Any) -> Reply:
        """As an ``HTTP_PROXY`` client: ``url`` is ``http://host:port/path`` (absolute-form to the proxy)."""
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, url, proxy=self.proxy_url, **kwargs) as response,
        ):
            return Reply(response.status, dict(response.headers), await response.read())

    async def route(self, method: str, path: str, **kwargs: Any) -> Reply:
        """A local route ``/{name}/...`` on the Unix socket."""
        assert self.egress.socket_path is not None
        connector = aiohttp.UnixConnector(path=str(self.egress.socket_path))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(method, f"http://localhost{path}", **kwargs) as response,
        ):
            return Reply(response.status, dict(response.headers), await response.read())

    async def raw(self, request: bytes, *, read_until_close: bool = True) -> bytes:
        """Raw bytes to the loopback port; what came back before the proxy closed (or within a second)."""
        assert self.egress.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", self.egress.port)
        try:
            writer.write(request)
            await writer.drain()
            chunks = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0 if not read_until_close else 5.0):
                    while chunk := await reader.read(65536):
                        chunks.append(chunk)
            return b"".join(chunks)
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def running_egress(
    fake: FakeApiKeys,
    source: InMemorySvidSource,
    socket_dir: Path,
    ca_file: Path,
    *,
    clock: Callable[[], float] | None = None,
    monotonic: Callable[[], float] | None = None,
    report_interval: float = 3600.0,
) -> AsyncIterator[App]:
    """The egress proxy on ``socket_dir/egress.sock`` and a free loopback port, its real client talking to ``fake``;
    the catalog's first fetch is done when it is handed over."""
    link = ApiKeyClient(source=source, issuer=fake.issuer, server_id=BROKER_ID)
    options = EgressOptions(socket_path=socket_dir / "egress.sock", port=0, ca_file=ca_file, connect_timeout=5.0,
                            report_interval=report_interval)  # fmt: skip
    extra = {k: v for k, v in {"clock": clock, "monotonic": monotonic}.items() if v is not None}
    proxy = build_proxy(link, options, resolver=LocalResolver(), **extra)
    running = await start_egress(link, options, proxy=proxy)
    try:
        await until(lambda: proxy.catalog.fetches > 0 and not proxy.catalog.fetching)
        yield App(running)
    finally:
        await running.aclose()
