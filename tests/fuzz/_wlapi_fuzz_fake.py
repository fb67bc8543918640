"""A lying Workload API: a grpclib server on a Unix socket that answers from a script of raw messages.

A ``FetchX509SVID`` / ``FetchJWTBundles`` stream sends the next scripted message (bytes, sent as they are, so
they may be anything, valid protobuf or not) and stays open. The first stream, once the test sets ``release``,
sends the second message on the same stream (a real server pushes changes so); a client that refuses a message
hangs up and reconnects, and its new stream gets the next message. Once the script is used up, every further
stream gets the last message. ``FetchJWTSVID`` works the same way, one message per call.
This mirrors go-spiffe's in-process fake Workload API, but lets a test send what a real server never would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpclib.const import Cardinality, Handler
from grpclib.server import Server, Stream

from broker.identity.workload_pb import workload_pb2 as pb


class Raw:
    """A reply "message" whose serialisation is the given bytes (grpclib's codec calls SerializeToString)."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    def SerializeToString(self) -> bytes:  # noqa: N802 - protobuf's name
        return self.data

    @classmethod
    def FromString(cls, data: bytes) -> Raw:  # noqa: N802 - protobuf's name
        return cls(data)


@dataclass
class Script:
    """The messages one method answers with, in order; ``served`` counts the calls answered."""

    messages: list[bytes]
    served: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def next(self) -> bytes:
        message = self.messages[min(self.served, len(self.messages) - 1)]
        self.served += 1
        self.progress.set()
        return message

    async def wait_served(self, count: int, timeout: float = 10.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while self.served < count:
                    self.progress.clear()
                    await self.progress.wait()
        except TimeoutError:
            raise AssertionError(f"only {self.served} of {count} calls within {timeout}s") from None


@dataclass
class FakeWorkloadApi:
    x509: Script
    jwt_bundles: Script
    jwt_svid: Script = field(default_factory=lambda: Script([b""]))

    async def _stream(self, stream: Stream[Any, Raw], script: Script) -> None:
        await stream.recv_message()
        await stream.send_message(Raw(script.next()))
        if script.served == 1 and len(script.messages) > 1:
            await script.release.wait()
            await stream.send_message(Raw(script.next()))
        await asyncio.Event().wait()  # stays open until the client hangs up

    async def fetch_x509_svid(self, stream: Stream[Any, Raw]) -> None:
        await self._stream(stream, self.x509)

    async def fetch_jwt_bundles(self, stream: Stream[Any, Raw]) -> None:
        await self._stream(stream, self.jwt_bundles)

    async def fetch_jwt_svid(self, stream: Stream[Any, Raw]) -> None:
        await stream.recv_message()
        await stream.send_message(Raw(self.jwt_svid.next()))

    def __mapping__(self) -> dict[str, Handler]:
        stream, unary = Cardinality.UNARY_STREAM, Cardinality.UNARY_UNARY
        return {
            "/SpiffeWorkloadAPI/FetchX509SVID": Handler(self.fetch_x509_svid, stream, pb.X509SVIDRequest, Raw),
            "/SpiffeWorkloadAPI/FetchJWTBundles": Handler(self.fetch_jwt_bundles, stream, pb.JWTBundlesRequest, Raw),
            "/SpiffeWorkloadAPI/FetchJWTSVID": Handler(self.fetch_jwt_svid, unary, pb.JWTSVIDRequest, Raw),
        }


@asynccontextmanager
async def serving(fake: FakeWorkloadApi, socket_path: Path) -> AsyncIterator[str]:
    """Serve ``fake`` on ``socket_path``; yields the ``unix://`` address."""
    server = Server([fake])
    await server.start(path=str(socket_path))
    try:
        yield f"unix://{socket_path}"
    finally:
        server.close()
        await server.wait_closed()
