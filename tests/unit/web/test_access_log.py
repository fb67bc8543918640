"""Tests for broker.web.access_log: route templates instead of request bytes, probes at DEBUG."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from broker.web import HardenedAppRunner, start_tcp_site

CANARY = "CANARY-5be1"
METADATA = "/.well-known/oauth-authorization-server"


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def build_app() -> web.Application:
    app = web.Application()
    for path in ("/healthz", "/readyz", "/.well-known/oauth-authorization-server", "/token", "/items/{name}"):
        app.router.add_route("*", path, ok)
    return app


Fetch = Callable[[str, str], Awaitable[int]]


@pytest.fixture
async def fetch() -> AsyncIterator[Fetch]:
    runner = HardenedAppRunner(build_app())  # RouteAccessLogger is its default
    await runner.setup()
    port = await start_tcp_site(runner, "127.0.0.1", 0)
    session = aiohttp.ClientSession()

    async def run(method: str, path: str) -> int:
        async with session.request(method, f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status

    yield run
    await session.close()
    await runner.cleanup()


def access_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "aiohttp.access"]


@pytest.mark.parametrize(
    ("method", "path", "level", "shown"),
    [
        ("GET", "/healthz", logging.DEBUG, "GET /healthz 200"),
        ("GET", "/readyz", logging.DEBUG, "GET /readyz 200"),
        (
            "GET",
            "/.well-known/oauth-authorization-server",
            logging.DEBUG,
            "GET /.well-known/oauth-authorization-server",
        ),
        ("POST", "/token", logging.INFO, "POST /token 200"),
        ("GET", f"/items/{CANARY}?q={CANARY}", logging.INFO, "GET /items/{name} 200"),
        ("GET", f"/nowhere/{CANARY}", logging.INFO, "GET - 404"),
        ("PROPFIND", "/token", logging.INFO, "OTHER /token 200"),
    ],
    ids=["healthz", "readyz", "metadata", "token", "template", "unmatched", "odd-method"],
)
async def test_access_line_names_the_route_not_the_request_bytes(
    fetch: Fetch, caplog: pytest.LogCaptureFixture, method: str, path: str, level: int, shown: str
) -> None:
    with caplog.at_level(logging.DEBUG, logger="aiohttp.access"):
        await fetch(method, path)
    [(levelno, message)] = access_lines(caplog)
    assert levelno == level and shown in message and CANARY not in message


async def test_failed_probe_stays_at_info(caplog: pytest.LogCaptureFixture, fetch: Fetch) -> None:
    with caplog.at_level(logging.DEBUG, logger="aiohttp.access"):
        assert await fetch("DELETE", "/nowhere") == 404
    assert access_lines(caplog)[0][0] == logging.INFO
