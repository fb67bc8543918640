"""Helpers for the dev Workload API tests: entries for this process, and a small grpclib client."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from grpclib.client import Channel
from grpclib.const import Cardinality

from broker.devtools.devca import DevCA
from broker.devtools.workload_api import EntryStore, RegistrationEntry, WorkloadApiServer
from broker.identity.spiffeid import TrustDomain

TD = TrustDomain("example.org")
HEADER = {"workload.spiffe.io": "true"}


def me(path: str, *extra: str, **options: Any) -> RegistrationEntry:
    """An entry for the test process's own uid (plus ``extra`` selectors)."""
    return RegistrationEntry.of(f"spiffe://{TD.name}{path}", [f"unix:uid:{os.geteuid()}", *extra], **options)


def other_uid() -> int:
    return os.geteuid() + 4242


@asynccontextmanager
async def serving(ca: DevCA, entries: EntryStore, sock_dir: Path, **options: Any) -> AsyncIterator[WorkloadApiServer]:
    server = WorkloadApiServer(ca=ca, entries=entries, socket_path=sock_dir / "agent.sock", **options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def call_unary(
    server: WorkloadApiServer, method: str, request: Any, reply_type: type[Any], *, metadata: Any = HEADER
) -> Any:
    """One unary call over the server's socket with grpclib; GRPCError propagates."""
    channel = Channel(path=str(server.socket_path))
    request_type: type[Any] = type(request)
    try:
        async with channel.request(
            f"/SpiffeWorkloadAPI/{method}", Cardinality.UNARY_UNARY, request_type, reply_type, metadata=metadata
        ) as stream:
            await stream.send_message(request, end=True)
            return await stream.recv_message()
    finally:
        channel.close()


@asynccontextmanager
async def open_stream(
    server: WorkloadApiServer, method: str, request: Any, reply_type: type[Any], *, metadata: Any = HEADER
) -> AsyncIterator[Any]:
    """A server-streaming call left open for the caller to ``recv_message()`` from; cancelled on exit."""
    channel = Channel(path=str(server.socket_path))
    request_type: type[Any] = type(request)
    try:
        async with channel.request(
            f"/SpiffeWorkloadAPI/{method}", Cardinality.UNARY_STREAM, request_type, reply_type, metadata=metadata
        ) as stream:
            await stream.send_message(request, end=True)
            yield stream
            with contextlib.suppress(Exception):  # already ended by the server: nothing to cancel
                await stream.cancel()
    finally:
        channel.close()
