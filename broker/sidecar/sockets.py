"""Listening sockets for the sidecar: a Unix socket created with its final mode, and a loopback TCP port.

Whoever can connect to the Unix socket gets the workload's tokens, so the socket never exists under its public
name with a wider mode than configured: it is bound under a temporary name in the same directory, ``chmod``-ed,
then renamed into place (``rename`` keeps the bound inode). A stale socket left by a dead sidecar is replaced;
a live one, or a file that is not a socket, is an error. The Unix socket code itself is :mod:`broker._unix`.
"""

from __future__ import annotations

import asyncio
import socket

from broker._unix import MAX_UNIX_PATH_BYTES, bind_unix_socket
from broker.errors import ConfigError

__all__ = [
    "MAX_UNIX_PATH_BYTES",
    "bind_loopback",
    "bind_unix_socket",
    "is_loopback_host",
    "over_tcp",
    "parse_socket_mode",
]

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})


def parse_socket_mode(value: str | int) -> int:
    """``"0600"``/``"600"``/``0o600`` -> ``0o600``; permission bits only, and the owner must be able to use it."""
    try:
        mode = value if isinstance(value, int) else int(value, 8)
    except ValueError:
        raise ConfigError(f"socket mode {value!r} is not an octal number") from None
    if mode & ~0o777 or not mode & 0o600 == 0o600:
        raise ConfigError(f"socket mode {oct(mode)} must be permission bits including owner read/write (0600)")
    return mode


def bind_loopback(port: int, host: str = "127.0.0.1") -> socket.socket:
    """A bound TCP socket on a loopback address only (the tokens must not be reachable off the host)."""
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(f"the sidecar's HTTP port listens on loopback only, not {host!r}")
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::1" if host == "::1" else "127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def over_tcp(transport: asyncio.BaseTransport | None) -> bool:
    """Whether a request came in on a TCP port (a loopback port here), not on the Unix socket."""
    return transport is not None and isinstance(transport.get_extra_info("sockname"), tuple)


def is_loopback_host(host: str) -> bool:
    """Whether a ``Host`` header value names a loopback host (``localhost``, ``127.0.0.1``, ``[::1]``, any port).

    A web page that makes the browser call the loopback port through a name it controls (DNS rebinding) sends
    that name in ``Host``; local clients name a loopback host.
    """
    name = host[: host.find("]") + 1] if host.startswith("[") else host.rsplit(":", 1)[0]
    return name.lower() in _LOOPBACK_NAMES
