"""A real `spiffe-broker dev` in its own process, for tests that drive it from outside (e2e, interop)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from broker.devtools.devca import DevCA
from broker.identity.spiffeid import TrustDomain

BANNER_READY = "Ctrl-C stops everything."
TRUST_DOMAIN = TrustDomain("example.org")


@dataclass(frozen=True)
class DevProcess:
    """Where a running `spiffe-broker dev` listens (read from its banner), and its state and log."""

    banner: str
    state_dir: Path
    stderr_path: Path

    def find(self, pattern: str) -> str:
        match = re.search(pattern, self.banner)
        assert match, f"{pattern!r} not in banner:\n{self.banner}"
        return match.group(1)

    @property
    def issuer(self) -> str:
        return self.find(r"token service\s+(https://\S+)")

    @property
    def demo_url(self) -> str:
        return self.find(r"demo API\s+(https://\S+)/hello")

    @property
    def hello_url(self) -> str:
        return self.demo_url + "/hello"

    @property
    def workload_api(self) -> str:
        return self.find(r"Workload API\s+(unix://\S+)")

    @property
    def sidecar_socket(self) -> str:
        return self.find(r"sidecar\s+(/\S+)")

    @property
    def demo_audience(self) -> str:
        return self.find(r"\(audience (\S+)\)")

    def ca(self) -> DevCA:
        """The dev CA, loaded from the dev process's state directory (files it wrote 0600)."""
        return DevCA.load_or_create(self.state_dir / TRUST_DOMAIN.name / "workload-api", TRUST_DOMAIN)

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def _read_banner(process: subprocess.Popen[str], deadline: float, log: Path) -> str:
    assert process.stdout is not None
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if BANNER_READY in line:
            return "".join(lines)
    raise AssertionError(f"spiffe-broker dev did not become ready:\n{''.join(lines)}\n{log.read_text()}")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


@contextmanager
def running_dev(*dev_args: str, global_args: Sequence[str] = ()) -> Iterator[DevProcess]:
    """`spiffe-broker dev` on free ports, with short socket paths in a private tmp dir; stopped with Ctrl-C."""
    root = Path(tempfile.mkdtemp(prefix="sb-dev-", dir="/tmp"))
    runtime = root / "run"
    runtime.mkdir()
    log = root / "dev.log"
    argv = [
        sys.executable, "-m", "broker.cli", *global_args, "dev", "--state-dir", str(root / "state"),
        "--server-port", "0", "--demo-port", "0",
        "--workload-api-socket", str(runtime / "api.sock"), "--sidecar-socket", str(runtime / "t.sock"),
        *dev_args,
    ]  # fmt: skip
    with log.open("w") as err:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=dict(os.environ))
    try:
        yield DevProcess(_read_banner(process, time.monotonic() + 30, log), root / "state", log)
    finally:
        _stop(process)
        shutil.rmtree(root, ignore_errors=True)
