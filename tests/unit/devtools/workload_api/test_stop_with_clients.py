"""``spiffe-broker workload-api`` stops at once on SIGTERM even while clients hold open streams.

Python 3.12.1+ (gh-79033): asyncio's ``Server.wait_closed()`` waits for every accepted connection, so a server
that waits before closing its connections never stops while a client is connected.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from grpclib.exceptions import StreamTerminatedError
from spiffe._proto import workload_pb2 as pb

from broker.devtools.devca import DevCA
from broker.devtools.workload_api import InMemoryEntryStore, WorkloadApiServer

from ._support import me, open_stream

MAIN = "from broker.cli.main import main; main()"
EXIT_BOUND = 5.0  # seconds from SIGTERM to exit; the server's own bound (STOP_TIMEOUT) is not needed here
START_BOUND = 30.0


async def _wait_for_socket(path: Path, process: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(START_BOUND):
        while not await asyncio.to_thread(path.exists):
            assert process.returncode is None, "workload-api exited before listening"
            await asyncio.sleep(0.05)


async def test_sigterm_stops_workload_api_while_a_stream_is_open(sock_dir: Path) -> None:
    socket_path = sock_dir / "agent.sock"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", MAIN, "workload-api", "--socket", str(socket_path), "--state-dir", str(sock_dir / "s"),
        "--trust-domain", "example.org", "--register-uid", str(os.geteuid()), "--spiffe-id", "spiffe://example.org/c",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await _wait_for_socket(socket_path, process)
        server = SimpleNamespace(socket_path=socket_path)
        async with open_stream(server, "FetchX509SVID", pb.X509SVIDRequest(), pb.X509SVIDResponse) as stream:  # type: ignore[arg-type]
            first = await asyncio.wait_for(stream.recv_message(), 10)
            assert first.svids[0].spiffe_id == "spiffe://example.org/c"
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), EXIT_BOUND)
            with pytest.raises(StreamTerminatedError):  # the server ended the call by closing the connection
                await asyncio.wait_for(stream.recv_message(), EXIT_BOUND)
            elapsed = time.monotonic() - sent
    finally:
        if process.returncode is None:
            process.kill()
        stderr = await process.stderr.read() if process.stderr else b""
        await process.wait()
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    assert elapsed < EXIT_BOUND
    assert not socket_path.exists()


async def test_stop_returns_while_a_stream_is_open(ca: DevCA, sock_dir: Path) -> None:
    server = WorkloadApiServer(ca=ca, entries=InMemoryEntryStore([me("/web")]), socket_path=sock_dir / "agent.sock")
    await server.start()
    async with open_stream(server, "FetchX509SVID", pb.X509SVIDRequest(), pb.X509SVIDResponse) as stream:
        await asyncio.wait_for(stream.recv_message(), 10)
        await asyncio.wait_for(server.stop(), EXIT_BOUND)
    assert not server.socket_path.exists()
