"""The load generator (its own process): N keep-alive HTTP/1.1 connections, one request in flight on each.

``python -m bench.loadgen --unix PATH --path /v1/token?... --concurrency 32 --duration 2 --warmup 0.5`` prints one
JSON line: requests, errors, seconds, req/s, p50/p99 latency (microseconds), response size, status counts.

Two clients, same measuring loop:

* ``raw`` (default): a minimal asyncio ``Protocol`` per connection that writes a prepared request and reads the
  response by ``Content-Length``. It costs a few microseconds per request, so at concurrency 32 on a 2-core
  machine it is not the first thing to saturate.
* ``aiohttp``: ``aiohttp.ClientSession`` with ``UnixConnector``/``TCPConnector``. Its per-request cost is close
  to the servers' own, so it saturates first and flattens every difference between servers; kept to show that.

TLS (``--tls-ca/--tls-cert/--tls-key``): mutual TLS with the given client certificate; the server is verified
against ``--tls-ca`` without a host name check (SPIFFE authenticates by URI SAN, which the generator trusts).
Without ``--tls-cert`` the connection is TLS with no client certificate.

Client assertions (``--assertion-key PEM --assertion-kid KID --client-id ID --audience-claim ISSUER``): every
request carries a FRESH RFC 7523 ``private_key_jwt`` assertion appended to the ``--body-file`` form (an assertion
is single-use: the server's replay cache refuses a repeat). It is ES256-signed in this process before the
request's clock starts (``iss`` = ``sub`` = the client id, ``aud`` = the issuer, ``iat`` now, ``exp`` now + 30 s,
a random ``jti``), so the latency excludes the signing and the generator's CPU per request includes it.

Two more modes (each in its own module): ``--new-connection`` (:mod:`bench.loadgen_once`: a new TCP + TLS
connection per request, ``--resume`` to offer the previous session) and ``--grpc-jwt-audience AUD``
(:mod:`bench.loadgen_grpc`: the Workload API's ``FetchJWTSVID`` over ``--unix``). The command line is in
:mod:`bench.loadgen_cli`.
"""

from __future__ import annotations

import asyncio
import math
import resource
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.assertion_signer import AssertionSigner
from bench.loadgen_grpc import grpc_senders
from bench.loadgen_once import TlsCounters, content_length, request_once

__all__ = ["AssertionSigner", "LoadSpec", "percentile", "run_load"]

Send = Callable[[], Awaitable[tuple[int, int]]]
# Makes the next request (for assertions: signs its body) before its clock starts; returns how to send it.
Prepare = Callable[[], Send]


@dataclass(frozen=True, kw_only=True)
class LoadSpec:
    """What to send, where, how hard and for how long."""

    unix: str | None = None
    tcp: tuple[str, int] | None = None
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    method: str = "GET"
    path: str = "/"
    body: bytes = b""
    content_type: str | None = None
    concurrency: int = 1
    duration: float | None = 2.0
    requests: int | None = None
    warmup: float = 0.5
    client: str = "raw"
    assertions: AssertionSigner | None = None
    new_connection: bool = False
    resume: bool = False
    grpc_audience: str | None = None


def percentile(sorted_values: list[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; ``request`` returns (status, body length)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, int]] | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None:
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        length = content_length(head)
        total = end + 4 + length
        if len(self._buffer) < total:
            return
        del self._buffer[:total]
        self._waiter = None
        if not waiter.done():
            waiter.set_result((int(head[9:12]), length))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed by the server"))

    async def request(self, data: bytes) -> tuple[int, int]:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _raw_request(spec: LoadSpec, body: bytes | None = None) -> bytes:
    body = spec.body if body is None else body
    lines = [f"{spec.method} {spec.path} HTTP/1.1", "Host: localhost", "User-Agent: bench"]
    if spec.new_connection:
        lines.append("Connection: close")
    if body or spec.method == "POST":
        lines += [
            f"Content-Type: {spec.content_type or 'application/octet-stream'}",
            f"Content-Length: {len(body)}",
        ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def _fixed(send: Send) -> Prepare:
    return lambda: send


async def _raw_senders(spec: LoadSpec) -> tuple[list[Prepare], Callable[[], Awaitable[None]]]:
    loop = asyncio.get_running_loop()
    connections: list[_Connection] = []
    for _ in range(spec.concurrency):
        if spec.unix is not None:
            _, protocol = await loop.create_unix_connection(_Connection, spec.unix)
        else:
            assert spec.tcp is not None
            _, protocol = await loop.create_connection(
                _Connection,
                spec.tcp[0],
                spec.tcp[1],
                ssl=spec.ssl_context,
                server_hostname="" if spec.ssl_context else None,
            )
        connections.append(protocol)
    data = _raw_request(spec)
    signer = spec.assertions

    def sender(connection: _Connection) -> Prepare:
        if signer is None:
            return _fixed(lambda: connection.request(data))

        def prepare() -> Send:
            fresh = _raw_request(spec, spec.body + signer.form_suffix())
            return lambda: connection.request(fresh)

        return prepare

    async def close() -> None:
        for connection in connections:
            connection.close()
        await asyncio.sleep(0)

    return [sender(connection) for connection in connections], close


async def _once_senders(spec: LoadSpec, counters: TlsCounters) -> tuple[list[Prepare], Callable[[], Awaitable[None]]]:
    """New-connection mode (:mod:`bench.loadgen_once`): each worker offers its last session if ``spec.resume``."""
    if spec.tcp is None or spec.ssl_context is None:
        raise ValueError("--new-connection needs --tcp and --tls-ca")
    address, context = spec.tcp, spec.ssl_context
    signer = spec.assertions

    def sender() -> Prepare:
        saved: list[ssl.SSLSession | None] = [None]

        async def send(data: bytes) -> tuple[int, int]:
            status, length, session = await request_once(address, context, data, saved[0], counters)
            saved[0] = session if spec.resume else None
            return status, length

        fixed = _raw_request(spec)

        def prepare() -> Send:
            data = _raw_request(spec, spec.body + signer.form_suffix()) if signer is not None else fixed
            return lambda: send(data)

        return prepare

    async def close() -> None:
        await asyncio.sleep(0)

    return [sender() for _ in range(spec.concurrency)], close


async def _grpc_prepares(spec: LoadSpec) -> tuple[list[Prepare], Callable[[], Awaitable[None]]]:
    assert spec.unix is not None and spec.grpc_audience is not None
    sends, close = await grpc_senders(spec.unix, spec.grpc_audience, spec.concurrency)
    return [_fixed(send) for send in sends], close


async def _aiohttp_senders(spec: LoadSpec) -> tuple[list[Prepare], Callable[[], Awaitable[None]]]:
    connector: aiohttp.BaseConnector
    if spec.unix is not None:
        connector = aiohttp.UnixConnector(path=spec.unix, limit=spec.concurrency)
        url = f"http://localhost{spec.path}"
    else:
        assert spec.tcp is not None
        connector = aiohttp.TCPConnector(ssl=spec.ssl_context or False, limit=spec.concurrency)
        scheme = "https" if spec.ssl_context else "http"
        url = f"{scheme}://{spec.tcp[0]}:{spec.tcp[1]}{spec.path}"
    session = aiohttp.ClientSession(connector=connector)
    headers = {"Content-Type": spec.content_type} if spec.content_type else {}
    signer = spec.assertions

    async def send(body: bytes | None) -> tuple[int, int]:
        async with session.request(spec.method, url, data=body, headers=headers) as response:
            payload = await response.read()
            return response.status, len(payload)

    def prepare() -> Send:
        body = spec.body + signer.form_suffix() if signer is not None else spec.body or None
        return lambda: send(body)

    return [prepare] * spec.concurrency, session.close


@dataclass
class _Phase:
    """Shared stop condition and what the workers record."""

    deadline: float | None
    remaining: int | None
    record: bool
    latencies: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    size: int = 0


async def _worker(prepare: Prepare, phase: _Phase) -> None:
    clock = time.perf_counter_ns
    latencies, statuses = phase.latencies, phase.statuses
    while True:
        if phase.remaining is not None:
            if phase.remaining <= 0:
                return
            phase.remaining -= 1
        elif phase.deadline is not None and time.perf_counter() >= phase.deadline:
            return
        send = prepare()
        started = clock()
        try:
            status, size = await send()
        except (ConnectionError, OSError, aiohttp.ClientError):
            phase.errors += 1
            return
        if phase.record:
            latencies.append(clock() - started)
            statuses[status] += 1
            phase.size = size


async def _phase(senders: list[Prepare], phase: _Phase) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(_worker(send, phase) for send in senders))
    return time.perf_counter() - started


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _senders(spec: LoadSpec, counters: TlsCounters) -> tuple[list[Prepare], Callable[[], Awaitable[None]]]:
    """The mode's senders: gRPC, new connection per request, or keep-alive (raw or aiohttp)."""
    if spec.grpc_audience is not None:
        return await _grpc_prepares(spec)
    if spec.new_connection:
        return await _once_senders(spec, counters)
    return await (_raw_senders if spec.client == "raw" else _aiohttp_senders)(spec)


def _mode(spec: LoadSpec, counters: TlsCounters) -> dict[str, Any]:
    return {
        "mode": "grpc" if spec.grpc_audience else "new_connection" if spec.new_connection else "keep_alive",
        "tls_connections": counters.connections,
        "tls_resumed": counters.resumed,
        "tls": f"{counters.version} {counters.cipher}".strip(),
    }


async def run_load(spec: LoadSpec) -> dict[str, Any]:
    """Warm up for ``spec.warmup`` seconds, then measure ``spec.requests`` requests or ``spec.duration`` s."""
    counters = TlsCounters()
    senders, close = await _senders(spec, counters)
    warm = _Phase(deadline=time.perf_counter() + spec.warmup, remaining=None, record=True)
    try:
        if spec.warmup > 0:
            await _phase(senders, warm)
        deadline = time.perf_counter() + spec.duration if spec.requests is None and spec.duration else None
        measured = _Phase(deadline=deadline, remaining=spec.requests, record=True)
        cpu_before = _cpu_seconds()
        seconds = await _phase(senders, measured)
        cpu_used = _cpu_seconds() - cpu_before
    finally:
        await close()
    latencies = sorted(measured.latencies)
    ok = measured.statuses.get(200, 0)
    return {
        "client": spec.client,
        "concurrency": spec.concurrency,
        "requests": len(latencies),
        "ok": ok,
        "errors": measured.errors + len(latencies) - ok,
        "seconds": round(seconds, 4),
        "rps": round(len(latencies) / seconds, 1) if seconds > 0 else 0.0,
        "p50_us": round(percentile(latencies, 0.50) / 1000, 1),
        "p99_us": round(percentile(latencies, 0.99) / 1000, 1),
        "warmup_requests": len(warm.latencies),
        "warmup_errors": warm.errors + len(warm.latencies) - warm.statuses.get(200, 0),
        "warmup_statuses": {str(code): count for code, count in sorted(warm.statuses.items())},
        "cpu_s": round(cpu_used, 3),
        "generator_cpu_us_per_request": round(cpu_used / len(latencies) * 1e6, 1) if latencies else None,
        "response_bytes": measured.size,
        "statuses": {str(code): count for code, count in sorted(measured.statuses.items())},
        **_mode(spec, counters),
    }


if __name__ == "__main__":
    from bench.loadgen_cli import main

    main()
