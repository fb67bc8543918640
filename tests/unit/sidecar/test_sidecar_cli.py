"""``spiffe-broker call`` and the sidecar fed by a real Workload API (the dev server), in one process.

Servers run on an event loop in a background thread (the CLI runs its own loop in the test's thread): the dev
Workload API (one entry for this test's uid), the token service, the demo API and a sidecar whose identity comes
from the Workload API through ``WorkloadApiSvidSource``, as ``spiffe-broker sidecar`` does.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from broker.cli.main import main
from broker.devtools.demo_api import start_demo_api
from broker.devtools.devca import DevCA
from broker.devtools.workload_api.entries import InMemoryEntryStore, RegistrationEntry, Selector
from broker.devtools.workload_api.server import WorkloadApiServer
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.workloadapi.source import WorkloadApiSvidSource
from broker.sidecar.service import start_sidecar, token_service_matcher
from tests.unit.sidecar.sidecar_helpers import API, BROKER_ID, WEB_ID, start_real_token_service

API_ID = SpiffeId.parse("spiffe://example.org/ns/shop/sa/api")


class Stack:
    """Workload API, token service, demo API and sidecar on a loop in a background thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.loop = asyncio.new_event_loop()
        self.closers: list[Callable[[], Awaitable[Any]]] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)  # type: ignore[arg-type]

    async def start(self) -> None:
        ca = DevCA.ephemeral("example.org")
        entries = InMemoryEntryStore([RegistrationEntry(WEB_ID, frozenset({Selector("uid", os.geteuid())}))])
        self.wlapi = WorkloadApiServer(ca=ca, entries=entries, socket_path=self.directory / "wl.sock")
        await self.wlapi.start()
        self.closers.append(self.wlapi.stop)
        token_service = await start_real_token_service(InMemorySvidSource(ca, BROKER_ID))
        self.closers.append(token_service.stop)
        self.api = await start_demo_api(
            source=InMemorySvidSource(ca, API_ID), issuer=token_service.issuer, audience=API, token_service_id=BROKER_ID
        )
        self.closers.append(self.api.aclose)
        source = WorkloadApiSvidSource(address=self.wlapi.address)
        self.closers.append(source.aclose)
        await source.wait_ready(10)
        self.socket = self.directory / "sc.sock"
        sidecar = await start_sidecar(
            source=source,
            token_service_url=token_service.issuer,
            token_service_id=token_service_matcher(None, source),  # the default: spiffe://example.org/spiffe-broker
            socket_path=self.socket,
        )
        self.closers.append(sidecar.aclose)

    async def stop(self) -> None:
        for close in reversed(self.closers):
            await close()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    import shutil
    import tempfile

    directory = Path(tempfile.mkdtemp(dir="/tmp", prefix="cli-"))
    running = Stack(directory)
    running.thread.start()
    try:
        running.run(running.start())
        yield running
    finally:
        running.run(running.stop())
        running.loop.call_soon_threadsafe(running.loop.stop)
        running.thread.join(10)
        running.loop.close()
        shutil.rmtree(directory, ignore_errors=True)


def call_args(stack: Stack, *extra: str) -> list[str]:
    url = f"https://127.0.0.1:{stack.api.port}/hello"
    common = ["--audience", API, "--socket", str(stack.socket), "--workload-api", stack.wlapi.address]
    return ["call", url, *common, *extra]


def test_call_uses_the_workload_svid_and_a_sidecar_token_and_prints_the_body(stack: Stack) -> None:
    result = CliRunner().invoke(main, call_args(stack, "--scope", "orders:read"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"hello": str(WEB_ID), "scope": "orders:read"}


def test_call_include_prints_status_line_and_headers_like_curl(stack: Stack) -> None:
    result = CliRunner().invoke(main, call_args(stack, "-i", "--server-id", str(API_ID)))
    assert result.exit_code == 0, result.output
    head, _, body = result.output.partition("\n\n")
    assert head.splitlines()[0] == "HTTP/1.1 200 OK"
    assert "Content-Type: application/json; charset=utf-8" in head.splitlines()
    assert json.loads(body)["hello"] == str(WEB_ID)


def test_call_refuses_a_server_with_another_spiffe_id(stack: Stack) -> None:
    result = CliRunner().invoke(main, call_args(stack, "--server-id", "spiffe://example.org/ns/shop/sa/db"))
    assert result.exit_code == 1
    assert "unexpected peer SPIFFE ID" in result.output


def test_call_fail_flag_exits_22_on_http_errors(stack: Stack) -> None:
    url = f"https://127.0.0.1:{stack.api.port}/missing"
    common = ["--audience", API, "--socket", str(stack.socket), "--workload-api", stack.wlapi.address, "-f"]
    result = CliRunner().invoke(main, ["call", url, *common])
    assert result.exit_code == 22


def test_call_refuses_plain_http_urls(stack: Stack) -> None:
    result = CliRunner().invoke(main, ["call", "http://127.0.0.1/hello", "--audience", API, "--socket", "/x"])
    assert result.exit_code == 1
    assert "https://" in result.output


def test_sidecar_command_needs_a_socket_and_a_token_service() -> None:
    no_socket = CliRunner().invoke(main, ["sidecar", "--token-service", "https://127.0.0.1:8443"])
    no_service = CliRunner().invoke(main, ["sidecar", "--socket", "/tmp/x.sock"])
    bad_mode = CliRunner().invoke(main, ["sidecar", "--socket", "/tmp/x.sock", "--socket-mode", "0400"])
    assert (no_socket.exit_code, no_service.exit_code, bad_mode.exit_code) == (1, 1, 1)
    assert "--socket" in no_socket.output
    assert "--token-service" in no_service.output
    assert "0600" in bad_mode.output


def test_demo_api_command_needs_issuer_and_audience() -> None:
    no_issuer = CliRunner().invoke(main, ["demo-api", "--audience", API])
    no_audience = CliRunner().invoke(main, ["demo-api", "--issuer", "https://127.0.0.1:8443"])
    assert (no_issuer.exit_code, no_audience.exit_code) == (1, 1)
    assert "--issuer" in no_issuer.output
    assert "--audience" in no_audience.output
