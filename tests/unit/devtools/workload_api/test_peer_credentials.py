"""Attestation sees the *caller's* uid and gid: a child process drops to another user and calls the API.

Needs root (CI runs as root) to switch users; the socket directory is made 0755 so the other user reaches it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from broker.devtools.devca import DevCA
from broker.devtools.workload_api import InMemoryEntryStore, RegistrationEntry, WorkloadApiServer, WorkloadApiThread

# Switching to another uid needs root. CI runs as root; there (CI=true) these tests never skip.
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true", reason="switching to another uid needs root"
)

CHILD = Path(__file__).with_name("peer_client.py")
NOBODY = 65534
ENTRIES = [
    RegistrationEntry.of("spiffe://example.org/root", ["unix:uid:0"]),
    RegistrationEntry.of("spiffe://example.org/group", ["unix:gid:54321"]),
    RegistrationEntry.of("spiffe://example.org/both", [f"unix:uid:{NOBODY}", "unix:gid:54322"]),
    RegistrationEntry.of("spiffe://example.org/uid", ["unix:uid:65533"]),
]


@pytest.mark.parametrize(
    ("uid", "gid", "expected"),
    [
        pytest.param(NOBODY, NOBODY, "PERMISSION_DENIED", id="uid-without-entry-denied"),
        pytest.param(NOBODY, 54321, ["spiffe://example.org/group"], id="gid-selector-matches"),
        pytest.param(NOBODY, 54322, ["spiffe://example.org/both"], id="uid-and-gid-selectors-match"),
        pytest.param(65533, 54322, ["spiffe://example.org/uid"], id="uid-selector-matches-not-half-of-both"),
    ],
)
def test_caller_is_attested_by_its_own_credentials(
    ca: DevCA, sock_dir: Path, uid: int, gid: int, expected: object
) -> None:
    sock_dir.chmod(0o755)
    api = WorkloadApiServer(ca=ca, entries=InMemoryEntryStore(ENTRIES), socket_path=sock_dir / "agent.sock")
    with WorkloadApiThread(api):
        child = subprocess.run(
            [sys.executable, str(CHILD), str(api.socket_path), str(uid), str(gid)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["no_header"] == "INVALID_ARGUMENT"
    assert result["as_root"] == ["spiffe://example.org/root"]
    assert result["ids"] == [uid, uid, gid, gid]
    assert result["dropped"] == expected
