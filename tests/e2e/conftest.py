"""Fixtures for the end-to-end tests (helpers in devprocess.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from devprocess import DevProcess, read_banner


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    root = Path(tempfile.mkdtemp(prefix="sb-e2e-", dir="/tmp"))
    runtime = root / "run"
    runtime.mkdir()
    stderr_path = root / "dev.log"
    argv = [
        sys.executable, "-m", "broker.cli", "--log-level", "DEBUG", "dev",
        "--state-dir", str(root / "state"), "--server-port", "0", "--demo-port", "0",
        "--workload-api-socket", str(runtime / "api.sock"), "--sidecar-socket", str(runtime / "t.sock"),
    ]  # fmt: skip
    with stderr_path.open("w") as err:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=dict(os.environ))
    try:
        banner = read_banner(process, time.monotonic() + 30)
        yield DevProcess(process, banner, root / "state", runtime, stderr_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        shutil.rmtree(root, ignore_errors=True)
