"""A bounded load generator for (g): many revocation feed followers in one process, raw asyncio TLS connections.

``python -m bench.feed_followers --port P --count N --cert C --key K --ca A`` opens ``N`` mutual-TLS connections
to ``GET /v1/revocations`` (at most ``--ramp`` handshakes at a time), each presenting the given X.509-SVID, and
keeps them following. Per connection it keeps only its transport, its last ``seq`` and a few flags; per entry
event it records the receipt time (``time.time()``, the same clock as the harness on this machine).

Like the real follower (:mod:`broker.verify.feed`), a connection that ends reconnects after a full-jitter
exponential backoff (``DEFAULT_BACKOFF``) with ``Last-Event-ID`` and ``?feed_id=``; that is what makes a
reconnect storm after a server restart spread out.

It talks to the harness in JSON lines: it prints ``{"ready": ...}`` once the first ramp is done, then answers
commands read from stdin: ``status``, ``receipts`` (the receipt times since the last call, by ``seq``), ``quit``.
Only the harness's own processes run it; it parses no more of the stream than it needs to measure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import resource
import ssl
import sys
import time
from asyncio import sslproto
from collections import defaultdict
from typing import Any

from broker.verify.feed import DEFAULT_BACKOFF
from broker.web.tls_buffer import DEFAULT_TLS_READ_BUFFER

# asyncio gives every TLS connection a 256 KiB read buffer (sslproto.SSLProtocol.max_size), zeroed at once: 2.5 GiB
# for 10,000 connections. One TLS record per read is enough (broker.web.tls_buffer, which sizes the server's per
# listener); this process holds only these client connections, so it sets the class attribute for all of them.
sslproto.SSLProtocol.max_size = DEFAULT_TLS_READ_BUFFER

_ENTRY = re.compile(rb"id: (\d+)\nevent: token\.revoked\n")
_FEED_ID = re.compile(rb'"feed_id":"([A-Za-z0-9._-]+)"')
_TAIL = 96


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.check_hostname = False
        self.context.load_verify_locations(args.ca)
        self.context.load_cert_chain(args.cert, args.key)
        self.ramp = asyncio.Semaphore(args.ramp)
        self.following = 0
        self.connects = 0
        self.refusals: dict[str, int] = defaultdict(int)
        self.receipts: dict[int, list[float]] = defaultdict(list)
        self.feed_id = b""

    def record(self, seq: int, at: float) -> None:
        self.receipts[seq].append(at)

    async def connect(self, follower: Follower) -> None:
        loop = asyncio.get_running_loop()
        while True:
            async with self.ramp:
                self.connects += 1
                try:
                    await loop.create_connection(lambda: follower, "127.0.0.1", self.args.port, ssl=self.context)
                    return
                except (OSError, ssl.SSLError) as exc:
                    self.refusals[type(exc).__name__] += 1
            await asyncio.sleep(DEFAULT_BACKOFF.delay(follower.failures))
            follower.failures += 1


class Follower(asyncio.Protocol):
    __slots__ = ("failures", "following", "generator", "head", "seq", "tail", "transport")

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.transport: asyncio.Transport | None = None
        self.following = False
        self.seq = 0
        self.failures = 0
        self.head = b""
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        g = self.generator
        position = f"Last-Event-ID: {self.seq}\r\n" if self.seq and g.feed_id else ""
        query = f"?feed_id={g.feed_id.decode()}" if g.feed_id else ""
        transport.write(f"GET /v1/revocations{query} HTTP/1.1\r\nHost: broker\r\n{position}\r\n".encode())

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.following:
            self.head += data
            if b"event: hello" not in self.head:
                if len(self.head) > 4096 or (b"\r\n" in self.head and not self.head.startswith(b"HTTP/1.1 200")):
                    self.generator.refusals[self.head.split(b"\r\n", 1)[0][9:12].decode(errors="replace")] += 1
                    assert self.transport is not None
                    self.transport.close()
                return
            self.following, self.failures = True, 0
            self.generator.following += 1
            found = _FEED_ID.search(self.head)
            if found:
                self.generator.feed_id = found[1]
            data, self.head = self.head, b""
        buffer = self.tail + data
        for match in _ENTRY.finditer(buffer):
            seq = int(match[1])
            if seq > self.seq:
                self.seq = seq
                self.generator.record(seq, now)
        self.tail = buffer[-_TAIL:]

    def connection_lost(self, exc: Exception | None) -> None:
        g = self.generator
        if self.following:
            g.following -= 1
        else:
            self.failures += 1
        self.following, self.head, self.tail, self.transport = False, b"", b"", None
        delay = DEFAULT_BACKOFF.delay(self.failures)
        asyncio.get_running_loop().call_later(delay, lambda: asyncio.ensure_future(g.connect(self)))


def _answer(generator: Generator, command: str) -> dict[str, Any]:
    if command == "receipts":
        receipts, generator.receipts = generator.receipts, defaultdict(list)
        return {"receipts": {str(seq): times for seq, times in receipts.items()}}
    return {"following": generator.following, "connects": generator.connects, "refusals": dict(generator.refusals)}


async def _commands(generator: Generator) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line == "quit":
            return
        print(json.dumps(_answer(generator, line)), flush=True)


async def main(args: argparse.Namespace) -> None:
    generator = Generator(args)
    started = time.monotonic()
    followers = [Follower(generator) for _ in range(args.count)]
    await asyncio.gather(*(generator.connect(f) for f in followers))
    deadline = time.monotonic() + 60
    while generator.following < args.count and time.monotonic() < deadline:  # noqa: ASYNC110 (a counter)
        await asyncio.sleep(0.05)
    print(json.dumps({"ready": generator.following, "seconds": round(time.monotonic() - started, 2),
                      **_answer(generator, "status")}), flush=True)  # fmt: skip
    await _commands(generator)


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.feed_followers")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--ramp", type=int, default=64, help="handshakes in flight at once")
    return parser.parse_args(argv)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    random.seed()
    asyncio.run(main(_parse()))
