"""Running ``spiffe-broker`` as a real process, the way a user does, and reading what it printed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from broker.devtools.devca import DevCA
from broker.identity.spiffeid import SpiffeId
from broker.testing import short_dir as testing_short_dir

TIMEOUT = 60.0
WORKLOAD_ID = "spiffe://example.org/cli-test"


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any SPIFFE setting that could leak in, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPIFFE_", "_SPIFFE_"))}
    env.update(extra or {})
    return env


def run_cli(args: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Run:
    """``python -m broker.cli ARGS`` to completion (bounded), with stdin closed."""
    completed = subprocess.run(
        [sys.executable, "-m", "broker.cli", *args],
        env=clean_env(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=TIMEOUT,
        check=False,
    )
    return Run(completed.returncode, completed.stdout, completed.stderr)


def identity_options(ca: DevCA, directory: Path, spiffe_id: SpiffeId) -> list[str]:
    """``--cert/--key/--bundle`` files (in ``directory``) of a fresh X.509-SVID for ``spiffe_id`` from ``ca``."""
    svid = ca.issue_x509_svid(spiffe_id, ttl=600)
    name = spiffe_id.path.strip("/").replace("/", "-")
    cert, key, bundle = (directory / f"{name}.{part}.pem" for part in ("cert", "key", "bundle"))
    cert.write_bytes(svid.chain_pem())
    key.touch(mode=0o600)
    key.write_bytes(svid.key_pem())
    bundle.write_bytes(ca.x509_bundle().to_pem())
    return ["--cert", str(cert), "--key", str(key), "--bundle", str(bundle)]


def short_dir() -> contextlib.AbstractContextManager[Path]:
    """A private directory with a short path (Unix socket paths are limited to about 100 bytes)."""
    return testing_short_dir("cli-")


@dataclass
class WorkloadApiProcess:
    socket: Path
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    def stop(self) -> str:
        """SIGTERM, wait (bounded), and return everything it logged."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running_workload_api(directory: Path, *global_args: str) -> Iterator[WorkloadApiProcess]:
    """``spiffe-broker [GLOBAL_ARGS] workload-api`` with this uid registered, until its socket is up."""
    socket, log = directory / "api.sock", directory / "workload-api.log"
    args = [
        *global_args, "workload-api", "--socket", str(socket), "--state-dir", str(directory / "wl-state"),
        "--trust-domain", "example.org", "--register-uid", str(os.getuid()), "--spiffe-id", WORKLOAD_ID,
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", *args], env=clean_env(), stdin=subprocess.DEVNULL, stderr=sink
        )
    running = WorkloadApiProcess(socket, log, process)
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert process.poll() is None, f"workload-api exited: {log.read_text()}"
            assert time.monotonic() < deadline, "workload-api did not start"
            time.sleep(0.05)
        yield running
    finally:
        running.stop()
