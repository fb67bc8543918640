"""Unix domain sockets: the ``sun_path`` limit, stale socket removal, and binding with a final file mode.

* ``sockaddr_un.sun_path`` holds 108 bytes on Linux, NUL-terminated (unix(7)): a longer path cannot be bound.
* A socket file left by a dead server is removed only if nothing listens on it (a connect is refused); a live
  socket, or a file that is not a socket, is left alone and reported to the caller.
* :func:`bind_unix_socket` binds under a temporary name in the same directory, ``chmod``-s it, then renames it
  into place (``rename(2)`` keeps the bound inode): the socket never exists under its public name with a wider
  mode than asked for.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from broker.errors import ConfigError

__all__ = [
    "MAX_UNIX_PATH_BYTES",
    "StaleSocket",
    "bind_unix_socket",
    "fits_sun_path",
    "remove_stale_socket",
    "socket_in_use",
]

MAX_UNIX_PATH_BYTES = 107  # sockaddr_un.sun_path is 108 bytes on Linux, NUL-terminated

StaleSocket = Literal["absent", "removed", "not a socket", "in use"]


def fits_sun_path(path: Path | str) -> bool:
    """True if ``path`` fits in ``sockaddr_un.sun_path``."""
    return len(os.fsencode(path)) <= MAX_UNIX_PATH_BYTES


def socket_in_use(path: Path, *, timeout: float | None = None) -> bool:
    """True if something accepts connections on ``path``; a refused or missing socket is False, other errors raise."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        return True


def remove_stale_socket(path: Path, *, in_use: Callable[[Path], bool] = socket_in_use) -> StaleSocket:
    """Delete the socket file at ``path`` if nothing listens on it; what was found (nothing removed but a stale one)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "absent"
    if not stat.S_ISSOCK(mode):
        return "not a socket"
    if in_use(path):
        return "in use"
    path.unlink(missing_ok=True)
    return "removed"


def bind_unix_socket(path: Path, mode: int = 0o600) -> socket.socket:
    """A bound (not yet listening, non-blocking) Unix socket at ``path`` with file mode ``mode``."""
    if not fits_sun_path(path):
        raise ConfigError(f"socket path {path} is longer than {MAX_UNIX_PATH_BYTES} bytes")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    found = remove_stale_socket(path)
    if found == "not a socket":
        raise ConfigError(f"{path} exists and is not a socket")
    if found == "in use":
        raise ConfigError(f"{path} is in use by a running process")
    temporary = path.parent / f".sc-{secrets.token_hex(4)}"
    if not fits_sun_path(temporary):
        temporary = path.with_name(f".{secrets.token_hex(2)}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(temporary))
        os.chmod(temporary, mode)
        os.rename(temporary, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    sock.setblocking(False)
    return sock
