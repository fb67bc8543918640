"""Unix sockets: a stale socket is removed only when nothing listens on it."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from broker._unix import fits_sun_path, remove_stale_socket


def test_sun_path_limit() -> None:
    assert fits_sun_path("/" + "a" * 106)
    assert not fits_sun_path("/" + "a" * 107)


def test_only_a_socket_nobody_listens_on_is_removed() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as directory:
        path = Path(directory) / "s.sock"
        assert remove_stale_socket(path) == "absent"
        path.write_text("x")
        assert remove_stale_socket(path) == "not a socket"
        path.unlink()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
            live.bind(str(path))
            live.listen()
            assert remove_stale_socket(path) == "in use"
        assert remove_stale_socket(path) == "removed"
        assert not path.exists()
