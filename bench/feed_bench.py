"""(g) The revocation feed with 10,000 followers on one replica (issue 10, "Design it for a fleet").

One ``spiffe-broker server`` (its CLI as shipped, the SQLite store in its state directory) on the first CPU; the
followers come from ``bench.feed_followers`` processes on the second CPU (raw asyncio TLS connections, each
presenting an X.509-SVID of the bench trust domain, split across processes so each stays far under the
file-descriptor limit).
The harness appends entries to the same SQLite file from its own process, as another replica or the CLI would:
the server learns of them through the store's change feed (SQLite: a poll every 0.1 s), as in a deployment.

Measured, in this order:

1. **Memory per follower**: the server's ``VmRSS`` with every follower attached and idle, minus its ``VmRSS``
   before the first follower, over the number of followers; also the time and server CPU the ramp took (one TLS
   handshake and one X509-SVID check per follower).
2. **Delivery latency**: for each of ``events`` entries, from the append's commit (the harness's clock after the
   store returned) to each follower's receipt of that entry (the generator's clock: same machine); p50/p99/max
   over every (entry, follower) pair, and the per-entry time until *all* followers have it.
3. **CPU per fan-out**: the server's CPU time from the append until the last follower has the entry, minus what
   the idle server uses over the same time (measured just before).
4. **A reconnect storm**: the server is stopped (SIGTERM: every stream ends) and started again on the same port;
   every follower reconnects with jittered backoff and resumes from its ``seq``. Time from the restart until all
   follow again, the new server's CPU for it, and whether one more entry then reaches every follower.
5. The same ramp, memory and a shorter delivery measurement against the server with ``[server] tls_read_buffer =
   0``: Python's own 256 KiB TLS read buffer per connection instead of the shipped 17 KiB
   (:mod:`broker.web.tls_buffer`), to show what that setting saves.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from bench.procs import BROKER_CLI, Child, free_port, spawn, wait_until
from bench.stack import TRUST_DOMAIN, BrokerStack
from broker._files import write_private_file
from broker.events.revocations import TokenRevoked
from broker.identity.spiffeid import SpiffeId
from broker.store import Store, open_store

__all__ = ["feed_rows", "run_feed_bench"]

# heartbeat 60 s: no heartbeat lands inside a measured fan-out (a heartbeat is one more fan-out of the same kind)
SERVER_ENV = {"SPIFFE_BROKER_FEED__MAX_FOLLOWERS": "12000", "SPIFFE_BROKER_FEED__HEARTBEAT": "60"}
PYTHON_TLS_BUFFER_ENV = {"SPIFFE_BROKER_SERVER__TLS_READ_BUFFER": "0"}  # part 5: Python's 256 KiB per connection
START_TIMEOUT = 60.0
_FAN_OUT = re.compile(r"revocation feed: seq \d+-\d+ sent to (\d+) followers in ([\d.]+) ms")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return int(response.status) == 200


@dataclass
class FeedServer:
    """The token service under test, restartable on the same port with the same state."""

    stack: BrokerStack
    port: int = field(default_factory=free_port)
    health: int = field(default_factory=free_port)
    child: Child | None = None
    started_cpu: float = 0.0

    @property
    def store_url(self) -> str:
        return f"sqlite://{self.stack.files.server_state / 'broker.db'}"

    def start(self, name: str = "feed-server", env: dict[str, str] | None = None) -> Child:
        files = self.stack.files
        argv = [*BROKER_CLI, "server", "--listen", f"127.0.0.1:{self.port}", "--state-dir", str(files.server_state),
                "--policy", str(files.policy), "--cert", str(files.server_cert), "--key", str(files.server_key),
                "--bundle", str(files.bundle), "--jwt-bundle", str(files.jwt_bundle), "--health-port",
                str(self.health), "--kek-file", str(self.stack._kek()), "--store", self.store_url]  # fmt: skip
        child = spawn(name, argv, log_dir=files.logs, env={"PYTHONUNBUFFERED": "1", **SERVER_ENV, **(env or {})})
        os.sched_setaffinity(child.pid, {min(os.sched_getaffinity(0))})
        url = f"http://127.0.0.1:{self.health}/readyz"
        wait_until(lambda: _http_ok(url), timeout=START_TIMEOUT, what="the feed server's /readyz", child=child)
        self.child = child
        return child

    def stop(self) -> float:
        assert self.child is not None
        started = time.monotonic()
        self.child.stop(timeout=30.0)
        self.child = None
        return time.monotonic() - started

    def rss_kib(self) -> int:
        assert self.child is not None
        return self.child.memory_kib()["VmRSS"]

    def cpu(self) -> float:
        assert self.child is not None
        return self.child.cpu_seconds()

    def fan_outs_ms(self) -> list[float]:
        """The server's own fan-out durations (its INFO line per read of the log), in the order it logged them."""
        assert self.child is not None
        return [float(found[2]) for found in _FAN_OUT.finditer(self.child.log.read_text(errors="replace"))]


class Generators:
    """``count`` followers split over ``processes`` generator processes on the last CPU."""

    def __init__(self, stack: BrokerStack, port: int, count: int, processes: int) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        cpu = max(os.sched_getaffinity(0))
        for index in range(processes):
            cert, key = self._identity(stack, index)
            share = count // processes + (1 if index < count % processes else 0)
            argv = [sys.executable, "-m", "bench.feed_followers", "--port", str(port), "--count", str(share),
                    "--cert", str(cert), "--key", str(key), "--ca", str(stack.files.bundle)]  # fmt: skip
            self.procs.append(subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
            ))  # fmt: skip
        self.count = count

    @staticmethod
    def _identity(stack: BrokerStack, index: int) -> tuple[Any, Any]:
        svid = stack.ca.issue_x509_svid(SpiffeId(TRUST_DOMAIN, f"/follower/{index}"), ttl=7200)
        cert, key = stack.files.root / f"follower-{index}.pem", stack.files.root / f"follower-{index}.key"
        write_private_file(cert, svid.chain_pem())
        write_private_file(key, svid.key_pem())
        return cert, key

    @staticmethod
    def _line(stream: IO[str] | None) -> dict[str, Any]:
        assert stream is not None
        line = stream.readline()
        if not line:
            raise RuntimeError("a follower generator exited")
        result: dict[str, Any] = json.loads(line)
        return result

    def ready(self) -> list[dict[str, Any]]:
        return [self._line(proc.stdout) for proc in self.procs]

    def ask(self, command: str) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
        return [self._line(proc.stdout) for proc in self.procs]

    def following(self) -> int:
        return sum(answer["following"] for answer in self.ask("status"))

    def receipts(self) -> dict[int, list[float]]:
        merged: dict[int, list[float]] = {}
        for answer in self.ask("receipts"):
            for seq, times in answer["receipts"].items():
                merged.setdefault(int(seq), []).extend(times)
        return merged

    def quit(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.write("quit\n")
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": at(0.50), "p99": at(0.99), "max": round(ordered[-1], 2), "count": len(ordered)}


def _ramp(server: FeedServer, stack: BrokerStack, count: int, processes: int) -> tuple[Generators, dict[str, Any]]:
    time.sleep(2.0)
    base = server.rss_kib()
    cpu_before, started = server.cpu(), time.monotonic()
    generators = Generators(stack, server.port, count, processes)
    ready = generators.ready()
    ramp_s, ramp_cpu = time.monotonic() - started, server.cpu() - cpu_before
    time.sleep(3.0)  # idle: buffers of the handshakes released
    attached = server.rss_kib()
    following = sum(answer["ready"] for answer in ready)
    return generators, {
        "followers": following,
        "rss_before_mib": round(base / 1024, 1),
        "rss_with_followers_mib": round(attached / 1024, 1),
        "rss_per_follower_kib": round((attached - base) / max(following, 1), 1),
        "ramp_s": round(ramp_s, 1),
        "ramp_server_cpu_ms_per_follower": round(ramp_cpu / max(following, 1) * 1000, 3),
        "refusals": [answer["refusals"] for answer in ready],
    }


class Appender:
    """Appends entries to the server's SQLite store from this process, as another replica would."""

    def __init__(self, url: str) -> None:
        self._runner = asyncio.Runner()
        self._store: Store = self._runner.run(open_store(url))
        self._number = 0

    def append(self) -> tuple[int, float]:
        """One ``TokenRevoked``; its ``seq`` and the time its commit was acknowledged."""
        self._number += 1
        event = TokenRevoked(f"bench-{time.time_ns()}-{self._number}", datetime.now(UTC) + timedelta(hours=1))
        (entry,) = self._runner.run(self._store.revocations.append([event]))
        return entry.seq, time.time()

    def close(self) -> None:
        self._runner.run(self._store.close())
        self._runner.close()


def _await_delivery(generators: Generators, seq: int, timeout: float = 60.0) -> list[float]:
    got: list[float] = []
    deadline = time.monotonic() + timeout
    while len(got) < generators.count and time.monotonic() < deadline:
        time.sleep(0.05)
        got += generators.receipts().get(seq, [])
    return got


def _idle_cpu_rate(server: FeedServer, seconds: float) -> float:
    before, started = server.cpu(), time.monotonic()
    time.sleep(seconds)
    return (server.cpu() - before) / (time.monotonic() - started)


def _events(server: FeedServer, generators: Generators, appender: Appender, count: int) -> dict[str, Any]:
    idle = _idle_cpu_rate(server, 5.0)
    logged = len(server.fan_outs_ms())
    latencies: list[float] = []
    all_delivered: list[float] = []
    first: list[float] = []
    cpu_ms: list[float] = []
    delivered: list[int] = []
    for _ in range(count):
        time.sleep(0.5)
        cpu_before, started = server.cpu(), time.monotonic()
        seq, committed = appender.append()
        times = _await_delivery(generators, seq)
        cpu_ms.append((server.cpu() - cpu_before - idle * (time.monotonic() - started)) * 1000)
        delivered.append(len(times))
        if times:
            latencies += [(t - committed) * 1000 for t in times]
            all_delivered.append((max(times) - committed) * 1000)
            first.append((min(times) - committed) * 1000)
    return {
        "events": count,
        "delivered_per_event": {"min": min(delivered), "max": max(delivered)},
        "latency_ms": _percentiles(latencies),
        "all_followers_ms": _percentiles(all_delivered),
        "first_follower_ms": _percentiles(first),
        "server_fan_out_ms": _percentiles(server.fan_outs_ms()[logged:]),
        "server_cpu_ms_per_event": round(statistics.median(cpu_ms), 1),
        "server_cpu_us_per_follower_per_event": round(statistics.median(cpu_ms) / generators.count * 1000, 2),
        "idle_server_cores": round(idle, 4),
    }


def _storm(server: FeedServer, generators: Generators, appender: Appender) -> dict[str, Any]:
    before = generators.ask("status")
    stop_s = server.stop()
    restarted = time.monotonic()
    server.start(name="feed-server-restarted")
    ready_s = time.monotonic() - restarted
    cpu_start = server.cpu()  # the start-up itself is counted apart (ready_s)
    deadline = time.monotonic() + 300
    while generators.following() < generators.count and time.monotonic() < deadline:
        time.sleep(0.1)
    all_back_s = time.monotonic() - restarted
    storm_cpu = server.cpu() - cpu_start
    after = generators.ask("status")
    time.sleep(1.0)
    seq, committed = appender.append()
    times = _await_delivery(generators, seq)
    connects = sum(a["connects"] for a in after) - sum(b["connects"] for b in before)
    return {
        "stop_s": round(stop_s, 2),
        "restart_ready_s": round(ready_s, 2),
        "all_following_again_s": round(all_back_s, 2),
        "server_cpu_s": round(storm_cpu, 2),
        "server_cpu_ms_per_follower": round(storm_cpu / generators.count * 1000, 3),
        "connection_attempts": connects,
        "refusals": [answer["refusals"] for answer in after],
        "entry_after_storm": {"delivered": len(times), "of": generators.count,
                              "all_followers_ms": round((max(times) - committed) * 1000, 1) if times else None},
    }  # fmt: skip


def run_feed_bench(
    *, followers: int = 10_000, processes: int = 2, events: int = 20, keep: bool = False
) -> dict[str, Any]:
    """Parts 1-5 of the module docstring; the results as a JSON-ready dict."""
    results: dict[str, Any] = {"followers": followers, "generator_processes": processes, "server_env": SERVER_ENV,
                               "python_tls_buffer_env": PYTHON_TLS_BUFFER_ENV}  # fmt: skip
    with BrokerStack.create(keep=keep) as stack:
        server = FeedServer(stack)
        stack.children["feed-server"] = server.start()
        appender = Appender(server.store_url)
        generators, ramp = _ramp(server, stack, followers, processes)
        try:
            results["shipped"] = ramp
            results["delivery"] = _events(server, generators, appender, events)
            results["storm"] = _storm(server, generators, appender)
        finally:
            generators.quit()
        server.stop()
        server.start(name="feed-server-python-tls-buffer", env=PYTHON_TLS_BUFFER_ENV)
        generators, ramp = _ramp(server, stack, followers, processes)
        try:
            results["python_tls_buffer"] = ramp
            results["python_tls_buffer"]["delivery"] = _events(server, generators, appender, max(3, events // 4))
        finally:
            generators.quit()
            appender.close()
            server.stop()
        if keep:
            results["run_dir"] = str(stack.files.root)
    return results


def feed_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows for the results table."""
    shipped, delivery, storm = results["shipped"], results["delivery"], results["storm"]
    python = results["python_tls_buffer"]
    latency, everyone = delivery["latency_ms"], delivery["all_followers_ms"]
    return [
        ["(g) feed: RSS per follower", f"{shipped['rss_per_follower_kib']:,.1f} KiB "
         f"({shipped['followers']:,} followers)",
         f"tls_read_buffer = 0: {python['rss_per_follower_kib']:,.1f} KiB", "-", "measured (issue 10)"],
        ["(g) feed: delivery to all", f"p50 {latency['p50']:,.0f} ms, p99 {latency['p99']:,.0f} ms, "
         f"max {latency['max']:,.0f} ms; all followers p50 {everyone['p50']:,.0f} ms",
         f"server CPU {delivery['server_cpu_ms_per_event']:,.0f} ms/event", "-", "measured (issue 10)"],
        ["(g) feed: reconnect storm", f"all {shipped['followers']:,} back in {storm['all_following_again_s']:.1f} s",
         f"server CPU {storm['server_cpu_s']:.1f} s", "-", "measured (issue 10)"],
    ]  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(run_feed_bench(followers=int(sys.argv[1]) if len(sys.argv) > 1 else 1000, events=3), indent=2))
