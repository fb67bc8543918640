"""Private files: atomic 0600 writes in 0700 directories, and a watched file that keeps its last good value."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from broker._files import Watched, write_private_file


def test_private_file_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    path = tmp_path / "state" / "key.pem"
    write_private_file(path, b"secret")
    assert path.read_bytes() == b"secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["key.pem"]  # no temporary file left


def test_watched_reloads_on_change_and_keeps_the_last_good_value(tmp_path: Path) -> None:
    path = tmp_path / "n.txt"
    path.write_text("1")
    reads: list[str] = []

    def load() -> int:
        reads.append(path.read_text())
        return int(path.read_text())

    watched = Watched((path,), load)
    assert watched.reload() == 1
    assert not watched.refresh()
    path.write_text("22")
    assert watched.refresh() and watched.value == 22
    path.write_text("bad")
    with pytest.raises(ValueError):
        watched.refresh()
    assert watched.value == 22
    assert not watched.refresh()  # the broken file is read once per change, not once per poll
    assert reads == ["1", "22", "bad"]
