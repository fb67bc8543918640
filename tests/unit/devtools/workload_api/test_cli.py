"""``spiffe-broker workload-api``: serves until SIGTERM, persists private state, cleans up its socket."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from spiffe import WorkloadApiClient

from broker.cli.workload_api import workload_api

MAIN = "from broker.cli.main import main; main()"


def _wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            _, err = process.communicate()
            pytest.fail(f"workload-api did not start: {err}")
        time.sleep(0.05)


def test_command_serves_registered_uid_and_stops_cleanly_on_sigterm(sock_dir: Path) -> None:
    socket_path, state = sock_dir / "agent.sock", sock_dir / "state"
    command = [
        sys.executable, "-c", MAIN, "workload-api", "--socket", str(socket_path), "--state-dir", str(state),
        "--trust-domain", "example.org", "--x509-ttl", "60",
        "--register-uid", str(os.geteuid()), "--spiffe-id", "spiffe://example.org/cli",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(socket_path, process)
        with WorkloadApiClient(socket_path=f"unix://{socket_path}", default_timeout=5) as client:
            svid = client.fetch_x509_svid()
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert str(svid.spiffe_id) == "spiffe://example.org/cli"
    assert 55 <= (svid.leaf.not_valid_after_utc - svid.leaf.not_valid_before_utc).total_seconds() - 10 <= 60
    assert process.returncode == 0
    assert not socket_path.exists()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir()} == dict.fromkeys(
        ["ca.key", "ca.pem", "entries.yaml", "jwt.key"], 0o600
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["--register-uid", "1000"], "go together", id="uid-without-id"),
        pytest.param(["--spiffe-id", "spiffe://example.org/x"], "go together", id="id-without-uid"),
        pytest.param(["--register-uid", "1", "--spiffe-id", "spiffe://other.org/x"], "trust domain", id="foreign-id"),
        pytest.param(["--register-uid", "1", "--spiffe-id", "spiffe://example.org/"], "spiffe_id", id="bad-id"),
    ],
)
def test_command_rejects_bad_registration(sock_dir: Path, extra: list[str], message: str) -> None:
    args = ["--socket", str(sock_dir / "s"), "--state-dir", str(sock_dir / "st"), "--trust-domain", "example.org"]
    result = CliRunner().invoke(workload_api, [*args, *extra])
    assert result.exit_code != 0
    assert message in result.output
