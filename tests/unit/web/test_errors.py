"""Tests for broker.web.errors: a ConnectionError is the client's doing only when its connection is gone."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.web.errors import error_middleware

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


async def refused(request: web.Request) -> web.Response:
    raise ConnectionRefusedError("outbound call refused")


async def test_connection_error_on_a_live_connection_answers_500_and_logs_at_error(
    aiohttp_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/refused", refused)
    client = await aiohttp_client(app)
    with caplog.at_level(logging.DEBUG, logger="broker"):
        reply = await client.get("/refused")
        body = await reply.json()
    assert reply.status == 500 and body == {"error": "server_error"}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "ConnectionRefusedError" in errors[0].getMessage()
