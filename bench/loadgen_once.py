"""The load generator's new-connection mode: every request on a NEW TCP + TLS connection, then close.

Each request: connect, full TLS handshake (the client certificate too, when the context has one), one HTTP/1.1
request with ``Connection: close``, read the response by ``Content-Length``, send ``close_notify``, close. The
latency covers all of it. The TLS layer is an ``ssl.SSLObject`` over memory BIOs on a plain asyncio stream,
because asyncio's own TLS transport cannot offer a saved session.

With ``resume``, each worker offers the session saved from its previous connection (``wrap_bio(session=...)``;
with TLS 1.3 the server's ticket arrives after the handshake and is read with the response), so the server's
resumption support is what decides between a full and an abbreviated handshake. :class:`TlsCounters` counts
connections and resumed ones (``SSLObject.session_reused``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

__all__ = ["TlsCounters", "content_length", "request_once"]

CHUNK = 65536


@dataclass
class TlsCounters:
    """Connections made, how many of them resumed a session, and the last one's TLS version and cipher suite."""

    connections: int = 0
    resumed: int = 0
    version: str = ""
    cipher: str = ""


@dataclass(frozen=True)
class _Wire:
    """One connection: the TLS object, its two memory BIOs and the plain stream under them."""

    tls: ssl.SSLObject
    incoming: ssl.MemoryBIO
    outgoing: ssl.MemoryBIO
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def pump(self) -> None:
        """Flush what TLS wants to send, then feed it the next bytes from the socket."""
        pending = self.outgoing.read()
        if pending:
            self.writer.write(pending)
            await self.writer.drain()
        data = await self.reader.read(CHUNK)
        if not data:
            raise ConnectionError("connection closed by the server")
        self.incoming.write(data)

    async def exchange(self, data: bytes) -> tuple[int, int]:
        """Handshake, write the request, read until the response is complete."""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.pump()
        self.tls.write(data)
        buffer = bytearray()
        while (done := _complete(buffer)) is None:
            try:
                buffer += self.tls.read(CHUNK)
            except ssl.SSLWantReadError:
                await self.pump()
            except ssl.SSLZeroReturnError as closed:
                raise ConnectionError("TLS closed before the whole response") from closed
        return done

    def close(self) -> None:
        """Queue ``close_notify`` (the peer's reply is not awaited) and close the socket."""
        with contextlib.suppress(ssl.SSLError):
            self.tls.unwrap()
        self.writer.write(self.outgoing.read())
        self.writer.close()


def content_length(head: bytes) -> int:
    """The ``content-length`` of a lower-cased response head (0 if absent: the servers here always send it)."""
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    end = head.find(b"\r\n", at + 2)
    return int(head[at + 17 : end if end > 0 else len(head)])


def _complete(buffer: bytearray) -> tuple[int, int] | None:
    """(status, body length) once the whole response is in ``buffer``."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    length = content_length(head)
    if len(buffer) < end + 4 + length:
        return None
    return int(head[9:12]), length


Saved = ssl.SSLSession | None


async def request_once(
    address: tuple[str, int], context: ssl.SSLContext, data: bytes, session: Saved, counters: TlsCounters
) -> tuple[int, int, Saved]:
    """One request on a new connection: (status, body length, the session to offer next time)."""
    reader, writer = await asyncio.open_connection(*address)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=False, server_hostname=None, session=session)
    wire = _Wire(tls, incoming, outgoing, reader, writer)
    try:
        status, length = await wire.exchange(data)
        counters.connections += 1
        counters.resumed += int(tls.session_reused)
        counters.version, counters.cipher = tls.version() or "", (tls.cipher() or ("",))[0]
        return status, length, tls.session
    except ssl.SSLError as error:
        raise ConnectionError(f"TLS: {error}") from error
    finally:
        wire.close()
