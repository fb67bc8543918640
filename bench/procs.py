"""Child processes for the benchmarks: start, pin to CPUs, read memory, wait for readiness, stop.

Every server under test and every load generator runs in its own process, so the numbers include the real
process boundaries (sockets, scheduling) and nothing shares an interpreter or a GIL with the generator.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BROKER_CLI",
    "Child",
    "cpu_count",
    "free_port",
    "pin",
    "run_json",
    "spawn",
    "wait_until",
]

# The console script's entry point, run by this interpreter (no pyenv shim or wrapper process in between, so
# the PID we watch is the Python process that serves).
BROKER_CLI = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'spiffe-broker'; from broker.cli.main import main; main()",
]


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def pin(pid: int, cpus: set[int] | None) -> None:
    """Set the CPU affinity of every thread of ``pid`` (``None``: all CPUs this process may use)."""
    target = cpus if cpus is not None else os.sched_getaffinity(0)
    try:
        tids = [int(name) for name in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return
    for tid in tids:
        try:
            os.sched_setaffinity(tid, target)
        except (ProcessLookupError, OSError):
            continue


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, child: Child | None = None) -> None:
    """Poll ``check`` every 50 ms until it holds; fail early if ``child`` exits, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode} before {what}; see {child.log}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Child:
    """A started child process; its stdout and stderr go to ``log``."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    _log_file: Any = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def memory_kib(self) -> dict[str, int]:
        """``VmRSS`` and ``VmHWM`` (peak RSS) from ``/proc/<pid>/status``, in KiB."""
        found: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
        return found

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the CLIs stop cleanly on it), then SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._log_file.close()


def spawn(name: str, argv: Sequence[str], *, log_dir: Path, env: dict[str, str] | None = None) -> Child:
    log = log_dir / f"{name}.log"
    log_file = log.open("ab")
    child_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(list(argv), stdout=log_file, stderr=subprocess.STDOUT, env=child_env)
    return Child(name, proc, log, log_file)


def run_json(argv: Sequence[str], *, cpus: set[int] | None = None, timeout: float = 120.0) -> dict[str, Any]:
    """Run a helper process to completion (pinned to ``cpus`` from its start) and parse its last stdout line."""

    def set_affinity() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    done = subprocess.run(
        list(argv), capture_output=True, timeout=timeout, check=False, preexec_fn=set_affinity
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")
    lines = done.stdout.decode().strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1])
    return result
