"""Tests for broker.appclient.sidecar and the ``spiffe-broker token`` command against a running sidecar."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.appclient.sidecar import SidecarError, fetch_token, looks_like_http2
from broker.cli.main import main
from broker.devtools.devca import DevCA
from broker.devtools.workload_api.entries import InMemoryEntryStore
from broker.devtools.workload_api.server import WorkloadApiServer
from broker.identity.memory import InMemorySvidSource
from broker.sidecar.errors import TokenServiceRefusedError
from broker.sidecar.service import start_sidecar
from broker.testing import FakeTokenService
from tests.unit.sidecar.sidecar_helpers import API, BROKER_ID, WEB_ID, short_tmpdir


@pytest.fixture
def ca() -> DevCA:
    return DevCA.ephemeral("example.org")


@pytest.fixture
def workload_source(ca: DevCA) -> InMemorySvidSource:
    return InMemorySvidSource(ca, WEB_ID)


@pytest.fixture
def tmp_short() -> Iterator[Path]:
    with short_tmpdir() as directory:
        yield directory


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


def test_token_command_takes_the_socket_as_a_unix_url(sidecar: SidecarThread) -> None:
    """``--socket unix:///path`` (as SPIRE and SPIFFE_ENDPOINT_SOCKET write sockets) is the same socket."""
    result = CliRunner().invoke(main, ["token", "--audience", API, "--socket", f"unix://{sidecar.socket_path}"])
    assert result.exit_code == 0, result.output
    assert result.output == "token-1\n"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(bytes.fromhex("000000040000000000"), True, id="empty-settings"),  # RFC 9113 §3.4 server preface
        pytest.param(bytes.fromhex("00000c040000000000") + bytes(12), True, id="settings-with-values"),
        pytest.param(bytes.fromhex("000000040100000000"), True, id="settings-ack"),
        pytest.param(bytes.fromhex("000008070000000000"), False, id="goaway-first"),
        pytest.param(bytes.fromhex("000000040000000001"), False, id="settings-on-a-stream"),
        pytest.param(b"HTTP/1.1 200 OK\r\n", False, id="http-1.1"),
        pytest.param(b"\x00\x00\x00\x04", False, id="short"),
        pytest.param(b"", False, id="nothing"),
    ],
)
def test_an_http2_settings_frame_is_recognised(head: bytes, expected: bool) -> None:
    assert looks_like_http2(head) is expected


async def test_a_grpc_socket_is_named_as_such_and_no_byte_of_it_is_repeated(ca: DevCA, tmp_short: Path) -> None:
    """The Workload API's socket given as the sidecar's: say what it is instead of dumping its frames."""
    server = WorkloadApiServer(ca=ca, entries=InMemoryEntryStore(), socket_path=tmp_short / "api.sock")
    await server.start()
    try:
        with pytest.raises(SidecarError) as caught:
            await fetch_token(socket_path=tmp_short / "api.sock", audience=API)
    finally:
        await server.stop()
    assert caught.value.error == "not_a_sidecar"
    assert "looks like a gRPC/Workload API socket" in caught.value.description
    assert "\\x00" not in caught.value.description and "\x00" not in caught.value.description


async def test_an_http_server_that_is_not_the_sidecar_is_reported(tmp_short: Path) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(answer, path=str(tmp_short / "other.sock"))
    try:
        with pytest.raises(SidecarError) as caught:
            await fetch_token(socket_path=tmp_short / "other.sock", audience=API)
    finally:
        server.close()
        await server.wait_closed()
    assert caught.value.error == "not_a_sidecar"
    assert "did not answer HTTP/1.1" in caught.value.description and "SSH" not in caught.value.description
