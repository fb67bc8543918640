"""Slowloris against the token service over TLS: connections whose headers or body trickle in are closed.

Before: aiohttp has no header or body timeout (and an idle timer of an hour), so 10 of 12 such connections were
still open after 20 s. Here the service runs with ``request_timeout=1.0``; every connection must be closed by
the server within a few seconds while the client keeps sending a byte every 100 ms.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest

from tests.fuzz.token_service_thread import ServiceThread, client_tls, token_service

__all__ = ["client_tls", "token_service"]  # fixtures used by name

HEAD = b"POST /token HTTP/1.1\r\nHost: b\r\nContent-Type: application/x-www-form-urlencoded\r\n"
CONNECTIONS = 12


async def _trickle(ctx: ssl.SSLContext, port: int, opening: bytes) -> float:
    """Send ``opening``, then one byte every 100 ms until the server closes; seconds until it did."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(opening)
    try:
        async with asyncio.timeout(8):
            while not reader.at_eof():
                writer.write(b"a")
                await writer.drain()
                try:
                    await asyncio.wait_for(reader.read(1024), 0.1)
                except TimeoutError:
                    continue
    except (ConnectionError, ssl.SSLError):
        pass  # closed by the server while writing
    finally:
        writer.close()
    return time.monotonic() - started


@pytest.mark.parametrize(
    "opening",
    [HEAD + b"X-Slow: ", HEAD + b"Content-Length: 100000\r\n\r\ngrant_type="],
    ids=["headers", "body"],
)
def test_slow_clients_are_closed_by_the_request_deadline(
    token_service: ServiceThread, client_tls: ssl.SSLContext, opening: bytes
) -> None:
    async def attack() -> list[float]:
        tasks = [_trickle(client_tls, token_service.port, opening) for _ in range(CONNECTIONS)]
        return list(await asyncio.gather(*tasks))

    durations = asyncio.run(attack())
    assert max(durations) < 5.0, durations
