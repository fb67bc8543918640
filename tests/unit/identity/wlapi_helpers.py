"""Test helpers for the Workload API client: the dev Workload API as a child process, and a loop-stall meter."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from broker.devtools.devca import DevCA
from broker.identity.spiffeid import SpiffeId

_CLI = "from broker.cli.main import main; main()"


class WorkloadApiProcess:
    """``spiffe-broker workload-api`` in a child process: stopping it closes every connection, as an agent
    restart does. Its state directory persists across restarts, so the CA stays the same."""

    def __init__(self, directory: Path, spiffe_id: SpiffeId, *, uid: int | None = None, x509_ttl: float = 3600) -> None:
        self.socket_path = directory / "agent.sock"
        self.state_dir = directory / "state"
        self._log = directory / "server.log"
        self._args = [
            *("--socket", str(self.socket_path), "--state-dir", str(self.state_dir)),
            *("--trust-domain", spiffe_id.trust_domain.name, "--x509-ttl", str(x509_ttl)),
            *("--register-uid", str(os.getuid() if uid is None else uid), "--spiffe-id", str(spiffe_id)),
        ]
        self._trust_domain = spiffe_id.trust_domain
        self._process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"unix://{self.socket_path}"

    def ca(self) -> DevCA:
        return DevCA.load_or_create(self.state_dir, self._trust_domain)

    async def start(self, timeout: float = 15.0) -> None:
        """Spawn the server and wait until its socket exists."""
        assert self._process is None, "already running"
        with self._log.open("ab") as log:
            self._process = process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _CLI, "workload-api", *self._args, stdout=log, stderr=subprocess.STDOUT
            )
        await eventually(
            lambda: self.socket_path.exists() or process.returncode is not None,
            timeout=timeout,
            what="the Workload API socket",
        )
        if process.returncode is not None:
            raise AssertionError(f"workload-api exited: {self._log.read_text()}")

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, and wait for the exit."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()


class StallMeter:
    """The longest time the event loop was blocked, measured by a task ticking every 5 ms."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            self.longest = max(self.longest, now - last - 0.005)
            last = now

    async def __aenter__(self) -> StallMeter:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def eventually(check: Callable[[], bool | Awaitable[bool]], *, timeout: float = 10.0, what: str = "") -> None:
    """Poll ``check`` every 10 ms until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(0.01)
