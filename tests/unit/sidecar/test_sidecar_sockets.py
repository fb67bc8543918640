"""Tests for broker.sidecar.sockets and broker.sidecar.retry."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from pathlib import Path

import pytest

from broker.errors import ConfigError
from broker.identity.memory import InMemorySvidSource
from broker.sidecar.retry import RetryPolicy
from broker.sidecar.sockets import bind_loopback, bind_unix_socket, parse_socket_mode
from tests.unit.sidecar.sidecar_helpers import Starter


@pytest.mark.parametrize(
    ("value", "mode"),
    [("0600", 0o600), ("600", 0o600), ("0660", 0o660), (0o700, 0o700)],
    ids=["leading-zero", "bare", "group", "int"],
)
def test_socket_mode_is_parsed_as_octal(value: str | int, mode: int) -> None:
    assert parse_socket_mode(value) == mode


@pytest.mark.parametrize(
    "value", ["rw", "0400", "01600", "0060"], ids=["not-octal", "owner-read-only", "sticky", "no-owner"]
)
def test_socket_mode_must_be_permission_bits_with_owner_read_write(value: str) -> None:
    with pytest.raises(ConfigError):
        parse_socket_mode(value)


def test_unix_socket_never_exists_under_its_name_with_another_mode(tmp_short: Path) -> None:
    old_umask = os.umask(0)  # the widest umask: a plain bind would create the socket 0777
    try:
        sock = bind_unix_socket(tmp_short / "s.sock", 0o600)
    finally:
        os.umask(old_umask)
    try:
        assert stat.S_IMODE(os.stat(tmp_short / "s.sock").st_mode) == 0o600
        assert sorted(p.name for p in tmp_short.iterdir()) == ["s.sock"]
    finally:
        sock.close()


def test_stale_socket_of_a_dead_process_is_replaced(tmp_short: Path) -> None:
    path = tmp_short / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    sock = bind_unix_socket(path)
    sock.close()


def test_socket_in_use_is_not_taken_over(tmp_short: Path) -> None:
    path = tmp_short / "s.sock"
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen()
    try:
        with pytest.raises(ConfigError, match="in use"):
            bind_unix_socket(path)
    finally:
        live.close()


def test_regular_file_at_socket_path_is_not_replaced(tmp_short: Path) -> None:
    path = tmp_short / "s.sock"
    path.write_text("keep me")
    with pytest.raises(ConfigError, match="not a socket"):
        bind_unix_socket(path)
    assert path.read_text() == "keep me"


def test_too_long_socket_path_is_a_clear_error(tmp_short: Path) -> None:
    with pytest.raises(ConfigError, match="longer than"):
        bind_unix_socket(tmp_short / ("x" * 120))


def test_http_port_binds_loopback_only() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        bind_loopback(0, "0.0.0.0")
    sock = bind_loopback(0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


def test_backoff_uses_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.1, max_delay=1.0, rng=lambda: 1.0)
    assert [round(policy.delay(n), 3) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert RetryPolicy(rng=lambda: 0.0).delay(3) == 0.0


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


async def _raw(path: Path, data: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(data)
        writer.write_eof()  # shutdown(SHUT_WR), as `nc -N` and `curl --unix-socket` with a closed stdin do
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


async def test_sidecar_answers_a_request_followed_by_a_half_close(
    start: Starter, workload_source: InMemorySvidSource, tmp_short: Path
) -> None:
    """Before: the sidecar's Unix socket closed on the client's FIN and the request got no answer."""
    sidecar = await start(workload_source)
    assert sidecar.socket_path is not None
    reply = await _raw(sidecar.socket_path, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200")


async def test_sidecar_never_echoes_malformed_request_bytes(
    start: Starter, workload_source: InMemorySvidSource, caplog: pytest.LogCaptureFixture
) -> None:
    sidecar = await start(workload_source)
    assert sidecar.socket_path is not None
    canary = "eyJhbGciOiJFUzI1NiJ9.CANARY-sidecar.sig"
    with caplog.at_level(logging.DEBUG):
        reply = await _raw(sidecar.socket_path, f"GET / HTTP/1.1\r\nX-Bad\x01: {canary}\r\n\r\n".encode())
    assert b" 400 " in reply.split(b"\r\n")[0]
    assert canary.encode() not in reply and canary not in caplog.text
