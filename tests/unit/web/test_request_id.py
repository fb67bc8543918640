"""The request id middleware: a well-formed caller id is adopted (never sent back), any other is replaced by a
fresh one that the response carries; the handler and every task it starts see the id."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker._logging import REQUEST_ID, REQUEST_ID_HEADER
from broker.web.request_id import request_id_middleware

Client = TestClient[web.Request, web.Application]


async def seen(request: web.Request) -> web.Response:
    in_task = await asyncio.create_task(asyncio.sleep(0, REQUEST_ID.get()))
    return web.json_response({"handler": REQUEST_ID.get(), "task": in_task})


@pytest.fixture
async def client(aiohttp_client) -> Client:  # type: ignore[no-untyped-def]
    app = web.Application(middlewares=[request_id_middleware])
    app.router.add_get("/", seen)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


async def test_a_well_formed_id_is_adopted_and_not_sent_back(client: Client) -> None:
    response = await client.get("/", headers={REQUEST_ID_HEADER: "app-req.42:x"})
    assert await response.json() == {"handler": "app-req.42:x", "task": "app-req.42:x"}
    assert REQUEST_ID_HEADER not in response.headers


@pytest.mark.parametrize("offered", [None, "", "has space", "x" * 65, "quote\"d", "semi;colon"],
                         ids=["none", "empty", "space", "too long", "quote", "semicolon"])  # fmt: skip
async def test_any_other_is_replaced_by_a_fresh_id_the_response_carries(client: Client, offered: str | None) -> None:
    headers = {} if offered is None else {REQUEST_ID_HEADER: offered}
    response = await client.get("/", headers=headers)
    fresh = response.headers[REQUEST_ID_HEADER]
    assert re.fullmatch(r"[0-9a-f]{16}", fresh)
    assert await response.json() == {"handler": fresh, "task": fresh}


async def test_each_request_gets_its_own_id(client: Client) -> None:
    first, second = await asyncio.gather(client.get("/"), client.get("/"))
    assert first.headers[REQUEST_ID_HEADER] != second.headers[REQUEST_ID_HEADER]
    assert REQUEST_ID.get() is None  # nothing leaked into the test's own context
