"""Tests for broker.sidecar.client and the ``spiffe-broker token`` command against a running sidecar."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sidecar_helpers import API, BROKER_ID, FakeTokenService

from broker.cli.main import main
from broker.identity.source import InMemorySvidSource
from broker.sidecar.client import SidecarError, fetch_token
from broker.sidecar.errors import TokenServiceRefusedError
from broker.sidecar.service import start_sidecar


class SidecarThread:
    """A sidecar on its own event loop in a thread, so synchronous CLI code can call it."""

    def __init__(self, source: InMemorySvidSource, fake: FakeTokenService, socket_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.socket_path = socket_path
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, args=(source, fake), daemon=True)

    def _run(self, source: InMemorySvidSource, fake: FakeTokenService) -> None:
        async def serve() -> None:
            self._stop = asyncio.Event()
            sidecar = await start_sidecar(
                source=source,
                token_service_url="https://127.0.0.1:1",
                token_service_id=BROKER_ID,
                socket_path=self.socket_path,
                token_service=fake,
            )
            self._started.set()
            await self._stop.wait()
            await sidecar.aclose()

        self.loop.run_until_complete(serve())
        self.loop.close()

    def __enter__(self) -> SidecarThread:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def fake(workload_source: InMemorySvidSource) -> FakeTokenService:
    return FakeTokenService(workload_source)


@pytest.fixture
def sidecar(workload_source: InMemorySvidSource, fake: FakeTokenService, tmp_short: Path) -> Iterator[SidecarThread]:
    with SidecarThread(workload_source, fake, tmp_short / "s.sock") as running:
        yield running


def test_token_command_prints_the_access_token(sidecar: SidecarThread) -> None:
    result = CliRunner().invoke(main, ["token", "--audience", API, "--socket", str(sidecar.socket_path)])
    assert result.exit_code == 0, result.output
    assert result.output == "token-1\n"


def test_token_command_json_prints_the_whole_response(sidecar: SidecarThread) -> None:
    args = ["token", "--audience", API, "--scope", "orders:read", "--socket", str(sidecar.socket_path), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert (document["access_token"], document["scope"]) == ("token-1", "orders:read")


def test_token_command_reports_a_refusal_and_fails(sidecar: SidecarThread, fake: FakeTokenService) -> None:
    fake.failure = TokenServiceRefusedError("invalid_target", "audience not allowed")
    result = CliRunner().invoke(main, ["token", "--audience", API, "--socket", str(sidecar.socket_path)])
    assert result.exit_code == 1
    assert "invalid_target: audience not allowed" in result.output


def test_token_command_without_a_running_sidecar_says_so(tmp_short: Path) -> None:
    result = CliRunner().invoke(main, ["token", "--audience", API, "--socket", str(tmp_short / "none.sock")])
    assert result.exit_code == 1
    assert "cannot reach the sidecar" in result.output


async def test_fetch_token_raises_the_sidecar_error(tmp_short: Path, workload_source: InMemorySvidSource) -> None:
    fake = FakeTokenService(workload_source, failure=TokenServiceRefusedError("invalid_scope", "no"))
    sidecar = await start_sidecar(
        source=workload_source,
        token_service_url="https://127.0.0.1:1",
        token_service_id=BROKER_ID,
        socket_path=tmp_short / "s.sock",
        token_service=fake,
    )
    try:
        with pytest.raises(SidecarError) as caught:
            await fetch_token(socket_path=tmp_short / "s.sock", audience=API, scope="x")
        assert (caught.value.error, caught.value.status) == ("invalid_scope", 403)
        fake.failure = None
        token = await fetch_token(socket_path=tmp_short / "s.sock", audience=API, scope="x")
        assert token.access_token == "token-2"
        assert "token-2" not in repr(token)
    finally:
        await sidecar.aclose()
