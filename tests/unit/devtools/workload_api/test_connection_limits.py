"""The dev Workload API's connection limits: a late HTTP/2 preface closes the connection; connections are capped."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from broker.devtools.devca import DevCA
from broker.devtools.workload_api import InMemoryEntryStore, WorkloadApiServer

from ._support import me, serving

DEADLINE = 0.3


async def closed_within(server: WorkloadApiServer, data: bytes, limit: float) -> float:
    """Send ``data`` on a raw connection; the seconds until the server closes it (fails after ``limit``)."""
    reader, writer = await asyncio.open_unix_connection(str(server.socket_path))
    started = time.monotonic()
    try:
        writer.write(data)
        async with asyncio.timeout(limit):
            with contextlib.suppress(ConnectionError):  # closed before it read what we sent (reset, or EPIPE: uvloop)
                while await reader.read(65536):
                    pass  # the server's own preface and SETTINGS
        return time.monotonic() - started
    finally:
        writer.close()


async def test_connections_that_never_finish_the_http2_preface_are_closed_after_the_deadline(
    ca: DevCA, sock_dir: Path
) -> None:
    async with serving(ca, InMemoryEntryStore([me("/web")]), sock_dir, preface_timeout=DEADLINE) as server:
        waits = await asyncio.gather(*(closed_within(server, b"PRI", 5.0) for _ in range(5)))
    assert all(DEADLINE * 0.9 <= wait < DEADLINE + 2.0 for wait in waits), waits


async def test_connections_beyond_the_cap_are_closed_at_once(ca: DevCA, sock_dir: Path) -> None:
    store = InMemoryEntryStore([me("/web")])
    async with serving(ca, store, sock_dir, preface_timeout=30.0, max_connections=2) as server:
        held = [await asyncio.open_unix_connection(str(server.socket_path)) for _ in range(2)]
        for reader, _ in held:  # accepted: the server's preface arrived
            async with asyncio.timeout(5):
                assert await reader.read(1)
        try:
            assert await closed_within(server, b"PRI", 2.0) < 2.0
        finally:
            for _, writer in held:
                writer.close()
