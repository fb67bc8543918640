"""What a new mTLS connection costs the token service: one grant per connection, full or resumed handshakes.

``python -m bench.handshakes`` starts the token service of the harness (:class:`bench.stack.BrokerStack`), once per
event loop (asyncio's, uvloop), and sends ``client_credentials`` grants, each on a new TLS 1.3 connection
(``Connection: close``), from blocking ``ssl`` sockets in this process: asyncio's TLS layer cannot offer a saved
session, these can (``session=``). Per loop and mode (``full``: no session offered; ``resumed``: the previous
connection's session offered, and the count of handshakes that did resume), it reports:

* ``cpu_us``: the server process's user+system CPU per grant (from /proc, median over ``--rounds`` alternated
  rounds), which other load on the machine inflates;
* with ``--callgrind``: instructions per grant counted by callgrind (``--instr-atstart=no``, switched on only
  around the measured connections), which other load does not change, and the share of them inside OpenSSL's
  ``SSL_do_handshake``.

The server runs with the harness's defaults: SQLite ledger and audit journal, metrics on, INFO logs.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import socket
import ssl
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from bench import stack as harness
from bench.loadgen_cli import client_tls_context
from bench.procs import Child

__all__ = ["main"]

LOOPS = ("asyncio", "uvloop")
MODES = ("full", "resumed")


@dataclass
class Target:
    port: int
    context: ssl.SSLContext
    request: bytes


def _grant_request() -> bytes:
    form = urlencode({"grant_type": "client_credentials", "audience": harness.AUDIENCE}).encode()
    head = (
        f"POST /token HTTP/1.1\r\nHost: broker\r\nConnection: close\r\nContent-Length: {len(form)}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    )
    return head.encode() + form


def grant(target: Target, session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
    """One grant on a new connection; the session to offer next time and whether this one was resumed."""
    with (
        socket.create_connection(("127.0.0.1", target.port), timeout=30) as raw,
        target.context.wrap_socket(raw, server_hostname="broker", session=session) as tls,
    ):
        tls.sendall(target.request)
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
        if not reply.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"grant refused: {reply[:80]!r}")
        return tls.session, bool(tls.session_reused)


def _series(target: Target, mode: str, count: int) -> int:
    session, resumed = grant(target, None)[0], 0
    for _ in range(count):
        offered = session if mode == "resumed" else None
        session, reused = grant(target, offered)
        resumed += reused
    return resumed


class _CallgrindStack(harness.BrokerStack):
    """The harness, with the token service started under callgrind (instrumentation off until switched on)."""

    callgrind_out: str = ""

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        if name == "server" and self.callgrind_out:
            out = f"--callgrind-out-file={self.callgrind_out}.%p"
            argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", out, *argv]
        return super()._spawn(name, argv, env)


@contextmanager
def _token_service(loop: str, callgrind_out: str | None) -> Iterator[tuple[Child, Target]]:
    saved = harness.START_TIMEOUT
    if callgrind_out:
        harness.START_TIMEOUT = 300.0  # start-up under valgrind
    try:
        with _CallgrindStack.create() as stack:
            assert isinstance(stack, _CallgrindStack)
            stack.callgrind_out = callgrind_out or ""
            child, port = stack.start_named_server("server", env={"SPIFFE_BROKER_EVENT_LOOP": loop})
            files = stack.files
            context = client_tls_context(files.bundle, files.client_cert, files.client_key)
            yield child, Target(port, context, _grant_request())
    finally:
        harness.START_TIMEOUT = saved


def measure_cpu(loop: str, count: int, rounds: int) -> dict[str, object]:
    """Server CPU per grant for each mode, alternated rounds, medians."""
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    resumed: dict[str, int] = dict.fromkeys(MODES, 0)
    with _token_service(loop, None) as (child, target):
        _series(target, "full", 50)  # warm-up
        for _ in range(rounds):
            for mode in MODES:
                before = child.cpu_seconds()
                resumed[mode] += _series(target, mode, count)
                samples[mode].append((child.cpu_seconds() - before) / count * 1e6)
    return {
        mode: {
            "cpu_us": round(statistics.median(samples[mode])),
            "rounds_us": [round(s) for s in samples[mode]],
            "resumed": resumed[mode],
            "grants": count * rounds,
        }
        for mode in MODES
    }


def _callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, check=False, timeout=60)


def _totals(path: str) -> tuple[int, int]:
    """Instructions in the dump, and those inside SSL_do_handshake (inclusive)."""
    text = Path(path).read_text()
    total = next(int(line.split()[1]) for line in text.splitlines() if line.startswith("totals:"))
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", path], capture_output=True, text=True, check=False
    ).stdout
    handshake = max(
        (int(line.split()[0].replace(",", "")) for line in annotated.splitlines() if ":SSL_do_handshake " in line),
        default=0,
    )
    return total, handshake


def measure_instructions(loop: str, count: int) -> dict[str, object]:
    """Callgrind instructions per grant for each mode (one series each)."""
    found: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="sbb-cg-") as directory:
        prefix = f"{directory}/cg"
        with _token_service(loop, prefix) as (child, target):
            _series(target, "full", 10)
            for mode in MODES:
                _callgrind(child.pid, "-z")
                _callgrind(child.pid, "-i", "on")
                resumed = _series(target, mode, count)
                _callgrind(child.pid, "-i", "off")
                _callgrind(child.pid, "-d", mode)
                time.sleep(1)
                dump = max(glob.glob(f"{prefix}.{child.pid}*"), key=os.path.getmtime)
                total, handshake = _totals(dump)
                os.unlink(dump)
                share = round(handshake / total, 3)
                found[mode] = {"instructions": total // count, "in_ssl_do_handshake": share, "resumed": resumed}
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.handshakes", description=__doc__.split("\n")[0])
    parser.add_argument("--grants", type=int, default=300, help="grants per round and mode (default 300)")
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds (default 5)")
    parser.add_argument("--callgrind", type=int, default=0, metavar="N", help="also count instructions over N grants")
    parser.add_argument("--output", type=Path, help="write the JSON here too")
    args = parser.parse_args(argv)
    cpu: dict[str, object] = {}
    instructions: dict[str, object] = {}
    for loop in LOOPS:
        cpu[loop] = measure_cpu(loop, args.grants, args.rounds)
        if args.callgrind:
            instructions[loop] = measure_instructions(loop, args.callgrind)
    result = {"openssl": ssl.OPENSSL_VERSION, "cpu_per_grant": cpu, "instructions_per_grant": instructions}
    text = json.dumps(result, indent=1)
    print(text, flush=True)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
