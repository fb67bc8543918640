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
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpclib.const import Cardinality, Handler
from grpclib.server import Server, Stream

from broker.devtools.devca import DevCA
from broker.identity.spiffeid import SpiffeId
from broker.identity.svid import X509Svid
from broker.identity.workloadapi.pb import workload_pb2 as pb


class Raw:
    """A reply "message" whose serialisation is the given bytes (grpclib's codec calls SerializeToString)."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data

    @classmethod
    def FromString(cls, data: bytes) -> Raw:
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
    server = _ClosingServer([fake])
    await server.start(path=str(socket_path))
    try:
        yield f"unix://{socket_path}"
    finally:
        server.close()
        server.close_connections()
        await server.wait_closed()
        await asyncio.sleep(0)  # let each closed transport release its socket before the test's loop ends


class _ClosingServer(Server):
    """grpclib's server, which leaves accepted connections open on ``close()``: this one closes them, so no
    transport outlives the test (a ``ResourceWarning``, an error under ``filterwarnings = error``)."""

    def __init__(self, handlers: list[Any]) -> None:
        super().__init__(handlers)
        self._protocols: list[Any] = []

    def _protocol_factory(self) -> Any:
        protocol = super()._protocol_factory()
        self._protocols.append(protocol)
        return protocol

    def close_connections(self) -> None:
        for protocol in self._protocols:
            processor = getattr(protocol, "processor", None)  # absent until connection_made
            if processor is not None:
                processor.close("server stopped")


# -- messages: good ones built from a DevCA, and mutated ones ------------------------------------------------------

WEB = SpiffeId.parse("spiffe://example.org/web")
TD_ID = "spiffe://example.org"


def x509_response(ca: DevCA, svid: X509Svid, **changes: Any) -> bytes:
    fields = {
        "spiffe_id": str(svid.spiffe_id),
        "x509_svid": svid.chain_der(),
        "x509_svid_key": svid.key_der(),
        "bundle": ca.x509_bundle().to_der(),
    }
    federated = changes.pop("federated_bundles", {})
    fields.update(changes)
    serialized: bytes = pb.X509SVIDResponse(
        svids=[pb.X509SVID(**fields)], federated_bundles=federated
    ).SerializeToString()
    return serialized


def bad_x509_responses(ca: DevCA, good: X509Svid, other: X509Svid) -> dict[str, bytes]:
    der = good.chain_der()
    return {
        "empty-svid-list": b"",
        "not-protobuf": b"\xff\xff\xff\xff",
        "non-utf8-spiffe-id": b"\x0a\x05\x0a\x03\xff\xfe\xfd",
        "garbage-certificate": x509_response(ca, good, x509_svid=b"\x30\x03\x02\x01"),
        "truncated-certificate": x509_response(ca, good, x509_svid=der[: len(der) // 2]),
        "empty-certificate": x509_response(ca, good, x509_svid=b""),
        "garbage-key": x509_response(ca, good, x509_svid_key=b"\x30\x00"),
        "key-of-another-svid": x509_response(ca, good, x509_svid_key=other.key_der()),
        "wrong-spiffe-id": x509_response(ca, good, spiffe_id="spiffe://example.org/not-web"),
        "invalid-spiffe-id": x509_response(ca, good, spiffe_id="not a spiffe id"),
        "garbage-bundle": x509_response(ca, good, bundle=b"\x00\x01"),
        "garbage-federated-bundle": x509_response(ca, good, federated_bundles={"spiffe://other.org": b"\x30"}),
        "federated-bundle-bad-key": x509_response(ca, good, federated_bundles={"not a td": ca.x509_bundle().to_der()}),
    }


def jwks_responses() -> dict[str, bytes]:
    def bundles(value: bytes, key: str = TD_ID) -> bytes:
        serialized: bytes = pb.JWTBundlesResponse(bundles={key: value}).SerializeToString()
        return serialized

    return {
        "not-json": bundles(b"{nope"),
        "not-utf8": bundles(b'{"keys": ["\xff"]}'),
        "deeply-nested": bundles(b"[" * 5000 + b"]" * 5000),
        "keys-not-a-list": bundles(b'{"keys": 5}'),
        "key-not-an-object": bundles(b'{"keys": [5, null, "x"]}'),
        "huge-number": bundles(b'{"keys": [{"kty": "EC", "x": ' + b"9" * 5000 + b"}]}"),
        "bad-trust-domain-key": bundles(b'{"keys": []}', key="https://example.org"),
    }


def make_jwt(header: bytes, payload: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    return f"{b64(header)}.{b64(payload)}.{b64(b'sig')}"


def jwt_svid_response(token: str) -> bytes:
    serialized: bytes = pb.JWTSVIDResponse(svids=[pb.JWTSVID(spiffe_id=str(WEB), svid=token)]).SerializeToString()
    return serialized
