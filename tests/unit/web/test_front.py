"""The folded front middleware answers, logs and counts every request exactly as the three middlewares it
replaces (request metrics -> request id -> error renderer), for each way a handler can end."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from broker._logging import REQUEST_ID, REQUEST_ID_HEADER
from broker.errors import InvalidGrantError, TemporarilyUnavailableError
from broker.web.errors import error_middleware
from broker.web.front import FrontMiddleware
from broker.web.metrics import GRANT_TYPE_KEY, HttpMetrics, request_metrics_middleware
from broker.web.request_id import request_id_middleware

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]
Outcome = tuple[int, bytes, str | None, bool, list[tuple[str, str]], dict[Any, float]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def ok(request: web.Request) -> web.Response:
    request[GRANT_TYPE_KEY] = "client_credentials"
    return web.json_response({"request_id": REQUEST_ID.get()})


async def oauth_error(request: web.Request) -> web.Response:
    raise InvalidGrantError("the subject token is not valid")


async def broker_error(request: web.Request) -> web.Response:
    raise TemporarilyUnavailableError("no key")


async def crash(request: web.Request) -> web.Response:
    raise RuntimeError("unexpected")


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")


HANDLERS: dict[str, Handler] = {"ok": ok, "oauth": oauth_error, "broker": broker_error, "crash": crash,
                                "redirect": redirect}  # fmt: skip


def _app(folded: bool) -> tuple[web.Application, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = HttpMetrics(registry)
    if folded:
        front = FrontMiddleware()
        front.metrics = metrics
        middlewares: list[object] = [front]
    else:
        middlewares = [request_metrics_middleware(metrics), request_id_middleware, error_middleware]
    app = web.Application(middlewares=middlewares)  # type: ignore[arg-type]
    for name, handler in HANDLERS.items():
        app.router.add_post(f"/{name}", handler)
    return app, registry


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for m in registry.collect()
        for s in m.samples
        if s.name.endswith(("_total", "_count"))
    }  # fmt: skip (durations differ between two runs)


async def _run(
    aiohttp_client: ClientFactory, folded: bool, path: str, offered: str | None, caplog: pytest.LogCaptureFixture
) -> Outcome:
    app, registry = _app(folded)
    client = await aiohttp_client(app)
    caplog.clear()
    headers = {} if offered is None else {REQUEST_ID_HEADER: offered}
    response = await client.post(path, headers=headers, allow_redirects=False)
    body = await response.read()
    fresh = response.headers.get(REQUEST_ID_HEADER)
    # a traceback's frames name the middleware's own file: compare each message's first line
    lines = [(r.levelname, r.getMessage().split("\n", 1)[0]) for r in caplog.records if r.name.startswith("broker")]
    body = body.replace((fresh or "-").encode(), b"<id>")
    return response.status, body, response.headers.get("Content-Type"), fresh is not None, lines, _samples(registry)


@pytest.mark.parametrize("path", [f"/{name}" for name in HANDLERS] + ["/missing"])
@pytest.mark.parametrize("offered", [None, "caller-id.1"], ids=["fresh-id", "adopted-id"])
async def test_folded_middleware_answers_logs_and_counts_as_the_three_it_replaces(
    aiohttp_client: ClientFactory, caplog: pytest.LogCaptureFixture, path: str, offered: str | None
) -> None:
    caplog.set_level(logging.DEBUG)
    unfolded = await _run(aiohttp_client, False, path, offered, caplog)
    folded = await _run(aiohttp_client, True, path, offered, caplog)
    assert folded == unfolded
    assert REQUEST_ID.get() is None


async def test_folded_middleware_without_metrics_still_sets_the_request_id(aiohttp_client: ClientFactory) -> None:
    app = web.Application(middlewares=[FrontMiddleware()])
    app.router.add_post("/ok", ok)
    client = await aiohttp_client(app)
    response = await client.post("/ok")
    assert (await response.json())["request_id"] == response.headers[REQUEST_ID_HEADER]
