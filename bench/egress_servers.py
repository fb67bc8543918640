"""The target and the reference forwarder of benchmark (j), each in its own process, run until SIGTERM/SIGINT.

``python -m bench.egress_servers target --port N --cert C --key K``: the third-party API. A bare aiohttp app on
``127.0.0.1:N`` over TLS 1.3 only (the ECDSA P-256 certificate the harness issued under its throwaway CA), keep-alive,
no access log:

* ``GET /v1/small``: a fixed 1 KiB JSON body;
* ``GET /v1/small-close``: the same body, then the target closes the connection (``Connection: close``): a caller
  needs a new TCP + TLS connection for every request (how much the proxy's upstream connection reuse saves);
* ``POST /v1/upload``: reads the body as it arrives, answers ``{"received": n}``; 400 if ``n`` is not the request's
  ``Content-Length``;
* ``GET /_stats``: ``{"connections": n}``, the TCP connections it has accepted so far (this one included).

A request that came through a forwarder (it carries a ``Via``) is answered 403 unless its ``Authorization`` is
exactly ``Bearer`` + the bench secret: every 200 through the proxy is an injected key.

``python -m bench.egress_servers bare --port N --ca CA``: the reference for the proxy, a bare aiohttp
forwarder on ``127.0.0.1:N``: an absolute-form ``http://`` request goes to ``https://`` the same URL through one
``aiohttp.ClientSession`` (the proxy's settings: keep-alive pool, ``CA`` only, no auto headers, no decompression),
hop-by-hop headers dropped, ``Authorization: Bearer`` + the key and a ``Via`` set, the response streamed back as it
comes. No checks, no scrubbing, aiohttp's own connection handler: what any aiohttp-based forwarder costs.

The egress proxy itself runs in its own module, :mod:`bench.egress_proxy`, the only one of the three that imports
the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import ssl
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

__all__ = ["CLOSE_HOST", "EXCEPTION", "SECRET", "TARGET_HOST", "LoopbackResolver", "main", "until_signalled"]

TARGET_HOST = "api.bench.example"
CLOSE_HOST = "close.bench.example"
EXCEPTION = "bench-api"
SECRET = "sk_bench_7Qm2XvR9pL4tW8nZ3cK6yH1dF5gJ0sA"  # a throwaway key: the target checks it arrived
SMALL_BODY = b'{"pad":"' + b"x" * 1014 + b'"}'  # 1 KiB of JSON
_AUTHORIZATION = f"Bearer {SECRET}"
_JSON = {"Content-Type": "application/json"}


class _Target:
    """The target's handlers and its connection count."""

    def __init__(self) -> None:
        self.connections = 0

    @staticmethod
    def _refused(request: web.Request) -> web.Response | None:
        if "Via" in request.headers and request.headers.get("Authorization") != _AUTHORIZATION:
            return web.Response(status=403, body=b'{"error":"no key injected"}', headers=_JSON)
        return None

    async def small(self, request: web.Request) -> web.Response:
        return self._refused(request) or web.Response(body=SMALL_BODY, headers=_JSON)

    async def small_close(self, request: web.Request) -> web.Response:
        response = self._refused(request) or web.Response(body=SMALL_BODY, headers=_JSON)
        response.force_close()
        return response

    async def upload(self, request: web.Request) -> web.Response:
        received = 0
        async for chunk in request.content.iter_any():
            received += len(chunk)
        refused = self._refused(request)
        if refused is not None:
            return refused
        status = 200 if received == request.content_length else 400
        return web.Response(status=status, body=json.dumps({"received": received}).encode(), headers=_JSON)

    async def stats(self, request: web.Request) -> web.Response:
        return web.Response(body=json.dumps({"connections": self.connections}).encode(), headers=_JSON)


def target_tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return context


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_target(port: int, context: ssl.SSLContext) -> None:
    target = _Target()
    app = web.Application()
    app.router.add_get("/v1/small", target.small)
    app.router.add_get("/v1/small-close", target.small_close)
    app.router.add_post("/v1/upload", target.upload)
    app.router.add_get("/_stats", target.stats)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    handler = runner.server
    assert handler is not None

    def counted() -> asyncio.Protocol:
        target.connections += 1
        return handler()

    server = await asyncio.get_running_loop().create_server(counted, "127.0.0.1", port, ssl=context)
    try:
        await until_signalled()
    finally:
        server.close()
        await runner.cleanup()


class LoopbackResolver(AbstractResolver):
    """Every name is 127.0.0.1 (the target's stand-in for DNS; aiohttp caches lookups per connection anyway)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0,
                              flags=socket.AI_NUMERICHOST)]  # fmt: skip

    async def close(self) -> None:
        return None


_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                         "upgrade", "host", "content-length"})  # fmt: skip


async def _bare_forward(session: aiohttp.ClientSession, request: web.Request) -> web.StreamResponse:
    headers = {name: value for name, value in request.headers.items() if name.lower() not in _HOP_BY_HOP}
    headers["Authorization"] = _AUTHORIZATION
    headers["Via"] = "1.1 bench-bare"
    if request.content_length is not None:
        headers["Content-Length"] = str(request.content_length)
    url = URL("https" + request.raw_path.removeprefix("http"), encoded=True)
    body = request.content if request.body_exists else None
    async with session.request(request.method, url, headers=headers, data=body, allow_redirects=False) as upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                response.headers.add(name, value)
        response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def serve_bare(port: int, ca_file: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    connector = aiohttp.TCPConnector(ssl=context, resolver=LoopbackResolver())
    skip = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False, skip_auto_headers=skip) as session:

        async def forward(request: web.Request) -> web.StreamResponse:
            return await _bare_forward(session, request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            await until_signalled()
        finally:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.egress_servers", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    target = commands.add_parser("target")
    target.add_argument("--port", type=int, required=True)
    target.add_argument("--cert", type=Path, required=True)
    target.add_argument("--key", type=Path, required=True)
    bare = commands.add_parser("bare")
    bare.add_argument("--port", type=int, required=True)
    bare.add_argument("--ca", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "target":
        asyncio.run(serve_target(args.port, target_tls(args.cert, args.key)))
    else:
        asyncio.run(serve_bare(args.port, args.ca))


if __name__ == "__main__":
    main()
