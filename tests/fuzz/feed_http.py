"""Reading the revocation feed's answer over raw mTLS: a refusal's JSON, or the first events of the stream.

The stream never ends on its own, so :func:`open_feed` reads until it holds the events it was asked for (or its
time runs out), then closes. The body is de-chunked when the answer is chunked (HTTP/1.1), read raw otherwise
(HTTP/1.0: the stream ends when the connection does). :func:`sse_blocks` splits it with an independent reading
of the wire form (:mod:`broker.events.feed`: ``\\n`` line ends, ``field: value`` lines, blocks ended by a blank line)
so that "valid SSE" is not judged by the parser under test.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import time
from dataclasses import dataclass

__all__ = ["FeedReply", "open_feed", "sse_blocks"]

_LINE = re.compile(r"(id|event|data): [\x20-\x7e]*|: [\x20-\x7e]*")


@dataclass(frozen=True)
class FeedReply:
    status: int  # 0: closed without an answer
    head: bytes
    body: bytes  # de-chunked; for a stream, what arrived before it was closed

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    """The chunks complete in ``data``, and whether the last (zero) chunk was seen."""
    out, i = b"", 0
    while True:
        end = data.find(b"\r\n", i)
        if end < 0:
            return out, False
        size = int(data[i:end].split(b";")[0], 16)
        if size == 0:
            return out, True
        if len(data) < end + 2 + size + 2:
            return out, False
        out += data[end + 2 : end + 2 + size]
        i = end + 2 + size + 2


def _events_in(body: bytes) -> int:
    return sum(1 for block in body.split(b"\n\n")[:-1] if any(not line.startswith(b":") for line in block.split(b"\n")))


def open_feed(ctx: ssl.SSLContext, port: int, raw: bytes, *, want: int, timeout: float = 5.0) -> FeedReply:
    """Send ``raw``; read a refusal whole, or a stream until ``want`` events arrived or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as plain, ctx.wrap_socket(plain) as tls:
        with contextlib.suppress(ssl.SSLEOFError, BrokenPipeError, ConnectionResetError):
            tls.sendall(raw)
        while time.monotonic() < deadline:
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep and (raw.startswith(b"HEAD ") or _complete(head, rest, want)):
                break
            tls.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = tls.recv(65536)
            except (TimeoutError, ssl.SSLEOFError, ConnectionResetError):
                chunk = b""
            if not chunk:
                break
            data += chunk
    if not data:
        return FeedReply(0, b"", b"")
    head, _, rest = data.partition(b"\r\n\r\n")
    chunked = b"transfer-encoding: chunked" in head.lower()
    return FeedReply(int(head.split(b" ", 2)[1]), head, _dechunk(rest)[0] if chunked else rest)


def _complete(head: bytes, rest: bytes, want: int) -> bool:
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        body, last = _dechunk(rest)
        return last or (b"text/event-stream" in lower and _events_in(body) >= want)
    match = re.search(rb"content-length: *(\d+)", lower)
    if match:
        return len(rest) >= int(match[1])
    return b"text/event-stream" in lower and _events_in(rest) >= want


def sse_blocks(body: bytes) -> list[dict[str, list[str]]]:
    """The complete blocks of ``body`` as ``{field: [values]}`` (comments under ``":"``); AssertionError if a line is
    not one the feed writes, or the body is not UTF-8."""
    text = body.decode("utf-8")
    blocks = []
    for block in text.split("\n\n")[:-1]:
        fields: dict[str, list[str]] = {}
        for line in block.split("\n"):
            assert _LINE.fullmatch(line), f"not a line of the feed's SSE form: {line[:80]!r}"
            name, _, value = line.partition(": ")
            fields.setdefault(name or ":", []).append(value)
        blocks.append(fields)
    return blocks
