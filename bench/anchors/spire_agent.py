"""A real spire-server + spire-agent (v1.15.3, built by scripts/build-spire.sh), as the integration suite starts them.

The deployment is the integration tests' own (:class:`tests.integration.spire.SpireDeployment`: sqlite3 datastore,
``join_token`` node attestation, ``unix`` workload attestor, INFO logs to files in its directory). This module
adds what the benchmark needs: the agent's PID (the measured process), a registration entry for this process's
uid, and a bounded wait until the agent hands out a JWT-SVID for the audience (the first fetch makes the agent
ask the server; later fetches come from the agent's JWT-SVID cache, which is what is measured).
"""

from __future__ import annotations

import os
import subprocess
import time

from bench.procs import Child
from tests.integration.spire import TRUST_DOMAIN, SpireBinaries, SpireDeployment, SpireError

__all__ = ["WORKLOAD_ID", "BenchSpire", "start_spire"]

WORKLOAD_ID = f"spiffe://{TRUST_DOMAIN}/workload"
JWT_TTL = 3600  # longer than a run: the agent refreshes past half of it, so the measured fetches are cache hits


class BenchSpire(SpireDeployment):
    """The deployment plus the agent's PID and a JWT-SVID readiness check."""

    @property
    def agent_pid(self) -> int:
        if self._agent is None:
            raise SpireError("the agent is not running")
        return self._agent.pid

    def agent_child(self) -> Child:
        """The agent as a :class:`bench.procs.Child` (for CPU readings; :meth:`close` stops it)."""
        if self._agent is None:
            raise SpireError("the agent is not running")
        return Child("spire-agent", self._agent, self.root / "agent.log", None)

    def server_child(self) -> Child:
        """The server as a :class:`bench.procs.Child` (for the machine-load split)."""
        if self._server is None:
            raise SpireError("the server is not running")
        return Child("spire-server", self._server, self.root / "server.log", None)

    def jwt_svid_ready(self, audience: str) -> bool:
        done = subprocess.run(
            [str(self.binaries.agent), "api", "fetch", "jwt", "-audience", audience, "-socketPath",
             self.workload_socket, "-timeout", "2s"],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        return done.returncode == 0


def _version(binaries: SpireBinaries) -> str:
    done = subprocess.run([str(binaries.agent), "--version"], capture_output=True, text=True, timeout=30, check=False)
    return (done.stdout or done.stderr).strip()


def start_spire(audience: str, *, timeout: float = 120.0) -> tuple[BenchSpire, str]:
    """Start both, register :data:`WORKLOAD_ID` for our uid, wait for its JWT-SVID; return it and the version."""
    binaries = SpireBinaries.find()
    if binaries is None:
        raise SpireError("no SPIRE binaries: run scripts/build-spire.sh first (or set SPIRE_BIN_DIR)")
    spire = BenchSpire(binaries, startup_timeout=timeout)
    try:
        spire.start()
        spire.create_entry(WORKLOAD_ID, [f"unix:uid:{os.getuid()}"], jwt_ttl=JWT_TTL)
        deadline = time.monotonic() + timeout
        while not spire.jwt_svid_ready(audience):
            if time.monotonic() > deadline:
                raise SpireError(f"no JWT-SVID for {WORKLOAD_ID} after {timeout:.0f}s:\n{spire.log_tail('agent')}")
            time.sleep(0.5)
    except BaseException:
        spire.close()
        raise
    return spire, _version(binaries)
