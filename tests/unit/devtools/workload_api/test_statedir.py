"""The state directory is private: 0700 directory, 0600 files, reused across restarts."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from broker.devtools.workload_api.entries import RegistrationEntry
from broker.devtools.workload_api.statedir import open_dev_state, prepare_state_dir


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_files_are_private_and_persist(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ca, store = open_dev_state(state, "example.org")
    store.upsert(RegistrationEntry.of("spiffe://example.org/web", ["unix:uid:1000"]))
    assert _mode(state) == 0o700
    assert sorted(p.name for p in state.iterdir()) == ["ca.key", "ca.pem", "entries.yaml", "jwt.key"]
    assert {p.name: _mode(p) for p in state.iterdir()} == dict.fromkeys(
        ["ca.key", "ca.pem", "entries.yaml", "jwt.key"], 0o600
    )
    again, store_again = open_dev_state(state, "example.org")
    assert again.ca_cert == ca.ca_cert
    assert [str(e.spiffe_id) for e in store_again.entries()] == ["spiffe://example.org/web"]


def test_existing_open_state_dir_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    prepare_state_dir(state)
    assert _mode(state) == 0o700


def test_state_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(OSError):
        prepare_state_dir(path)
