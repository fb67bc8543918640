"""``spiffe-broker status --sidecar SOCKET``: the node half, read from a running dev stack's sidecar."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.cli.status import status
from broker.devtools.stack import DevStack
from tests.unit.dev_stack_helpers import ask_sidecar, dev_stack


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[DevStack]:
    async with dev_stack(tmp_path) as running:
        yield running


async def get_token(stack: DevStack) -> None:
    status, _ = await ask_sidecar(stack, stack.demo_audience)
    assert status == 200


async def run(*args: str) -> str:
    result = await asyncio.to_thread(CliRunner().invoke, status, list(args))
    assert result.exit_code == 0, result.output
    return result.output


async def test_the_node_shows_its_svid_token_service_cached_tokens_and_feed(stack: DevStack) -> None:
    await get_token(stack)

    lines = (await run("--sidecar", str(stack.sidecar_socket))).splitlines()

    assert lines[0] == f"sidecar {stack.sidecar_socket} (ready)"
    assert lines[1].startswith(f"  X.509-SVID:    {stack.workload_id}, expires in ")
    assert lines[2].startswith(f"  token service: {stack.issuer} ")
    assert lines[3] == "  cached tokens (mtls-bound), by audience, time to live:"
    audience, seconds, unit = lines[4].split()
    assert audience == stack.demo_audience and 0 < float(seconds.replace(",", "")) <= 300 and unit == "s"
    assert lines[5].startswith("  revocation feed: ")


async def test_json_holds_the_sidecar_document_without_a_token(stack: DevStack) -> None:
    await get_token(stack)

    document = json.loads(await run("--sidecar", f"unix://{stack.sidecar_socket}", "--json"))

    assert set(document) == {"sidecar"}
    assert [token["audience"] for token in document["sidecar"]["tokens"]] == [stack.demo_audience]
    assert "access_token" not in json.dumps(document)


async def test_a_sidecar_that_is_not_there_is_one_line_naming_the_socket(tmp_path: Path) -> None:
    result = await asyncio.to_thread(CliRunner().invoke, status, ["--sidecar", str(tmp_path / "none.sock")])
    assert result.exit_code == 1
    assert "none.sock" in result.output and result.output.count("\n") == 1


async def test_a_socket_that_answers_something_else_is_named_not_misread(tmp_path: Path) -> None:
    from aiohttp import web

    async def not_a_sidecar(request: web.Request) -> web.Response:
        return web.json_response({"error": "not_found"}, status=404)

    app = web.Application()
    app.router.add_get("/v1/status", not_a_sidecar)
    runner = web.AppRunner(app)
    await runner.setup()
    socket_path = tmp_path / "other.sock"
    await web.UnixSite(runner, str(socket_path)).start()
    try:
        result = await asyncio.to_thread(CliRunner().invoke, status, ["--sidecar", str(socket_path)])
    finally:
        await runner.cleanup()

    assert result.exit_code == 1
    assert "HTTP 404 (not_found)" in result.output and "NOT READY" not in result.output
