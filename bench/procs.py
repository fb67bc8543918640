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
    "MachineLoad",
    "cpu_count",
    "free_port",
    "pin",
    "port_open",
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


def port_open(port: int) -> bool:
    """A TCP connection to 127.0.0.1:``port`` succeeds."""
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


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
        """``VmRSS``, ``VmHWM`` (peak RSS), ``RssAnon`` and ``RssFile`` from ``/proc/<pid>/status``, in KiB."""
        found: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                found[name] = int(value.split()[0])
        return found

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the whole process (all threads) so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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


def run_json(
    argv: Sequence[str], *, cpus: set[int] | None = None, timeout: float = 120.0, watch: Child | None = None
) -> dict[str, Any]:
    """Run a helper process to completion (pinned to ``cpus`` from its start) and parse its last stdout line.

    With ``watch`` (a server under load), add the server's CPU time over the run: ``server_cpu_s``, and
    ``server_cpu_us_per_request`` if the helper reports ``requests`` (and ``warmup_requests``)."""

    def set_affinity() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    cpu_before = watch.cpu_seconds() if watch is not None else 0.0
    done = subprocess.run(list(argv), capture_output=True, timeout=timeout, check=False, preexec_fn=set_affinity)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")
    lines = done.stdout.decode().strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1])
    if watch is not None:
        used = watch.cpu_seconds() - cpu_before
        result["server_cpu_s"] = round(used, 3)
        total = int(result.get("requests", 0)) + int(result.get("warmup_requests", 0))
        if total:
            result["server_cpu_us_per_request"] = round(used / total * 1e6, 1)
    return result


def _machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (``/proc/stat``: everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds(children: Sequence[Child]) -> float:
    """CPU of this harness, its finished helpers (load generators), and its running children."""
    times = os.times()
    running = 0.0
    for child in children:
        try:
            running += child.cpu_seconds()
        except FileNotFoundError:
            continue
    return times.user + times.system + times.children_user + times.children_system + running


@dataclass
class MachineLoad:
    """How busy the machine was during a section, split into this benchmark and everything else (``foreign``).

    ``children`` are the benchmark's long-running processes (servers); finished helpers are counted through
    ``os.times()`` once waited for. Values are in cores (1.0 = one CPU fully busy on average)."""

    children: Callable[[], Sequence[Child]]
    _start: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def start(self) -> None:
        self._start = (time.monotonic(), _machine_busy_seconds(), _own_cpu_seconds(self.children()))

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._start[0]
        busy = _machine_busy_seconds() - self._start[1]
        ours = _own_cpu_seconds(self.children()) - self._start[2]
        return {
            "seconds": round(wall, 1),
            "busy_cores": round(busy / wall, 2),
            "benchmark_cores": round(ours / wall, 2),
            "foreign_cores": round(max(0.0, busy - ours) / wall, 2),
        }


def foreign_load(sample: float = 1.0) -> float:
    """Cores kept busy by other processes over ``sample`` seconds (this harness idles meanwhile)."""
    meter = MachineLoad(children=list)
    meter.start()
    time.sleep(sample)
    return meter.stop()["foreign_cores"]


def wait_for_quiet(*, limit: float, threshold: float = 0.3, sample: float = 1.0) -> dict[str, float]:
    """Wait up to ``limit`` seconds for other processes to use less than ``threshold`` cores; report what we saw."""
    started = time.monotonic()
    load = foreign_load(sample)
    while load > threshold and time.monotonic() - started < limit:
        time.sleep(2.0)
        load = foreign_load(sample)
    return {"waited_s": round(time.monotonic() - started - sample, 1), "foreign_cores_at_start": load}
