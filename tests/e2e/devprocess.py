"""A real `spiffe-broker dev` in its own process, for end-to-end tests driven from this (separate) process."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from broker.identity.devca import DevCA
from broker.identity.spiffeid import TrustDomain

BANNER_READY = "Ctrl-C stops everything."


@dataclass
class DevProcess:
    process: subprocess.Popen[str]
    banner: str
    state_dir: Path
    runtime_dir: Path
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
        td = TrustDomain("example.org")
        return DevCA.load_or_create(self.state_dir / td.name / "workload-api", td)

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def read_banner(process: subprocess.Popen[str], deadline: float) -> str:
    assert process.stdout is not None
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if BANNER_READY in line:
            return "".join(lines)
    raise AssertionError("spiffe-broker dev did not become ready:\n" + "".join(lines))
