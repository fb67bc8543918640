"""Listening sockets for the sidecar: a Unix socket created with its final mode, and a loopback TCP port.

Whoever can connect to the Unix socket gets the workload's tokens, so the socket never exists under its public
name with a wider mode than configured: it is bound under a temporary name in the same directory, ``chmod``-ed,
then renamed into place (``rename`` keeps the bound inode). A stale socket left by a dead sidecar is replaced;
a live one, or a file that is not a socket, is an error. The Unix socket code itself is :mod:`broker._unix`.
"""

from __future__ import annotations

import socket

from broker._unix import MAX_UNIX_PATH_BYTES, bind_unix_socket
from broker.errors import ConfigError

__all__ = ["MAX_UNIX_PATH_BYTES", "bind_loopback", "bind_unix_socket", "parse_socket_mode"]


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
