"""Two token-service replicas behind one address, the dev Workload API, and sidecars with egress proxies.

The pieces a production deployment has, each a real process started from the CLI:

* the replicas of :class:`~tests.integration.replicas.ReplicaSet` (one PostgreSQL database), reached through one
  address, as behind a Kubernetes Service: :class:`TcpBalancer` hands each new connection to the next replica in
  turn, so the sidecars' keep-alive connections, grants and revocation feeds spread over both;
* ``spiffe-broker workload-api`` serving the app's X.509-SVID (``unix:uid`` of this process) from the same dev CA
  that forged the replicas' identities;
* ``spiffe-broker sidecar`` processes with an egress port, trusting the external API's test CA (``[egress]
  ca_file``).

The external API is the egress unit tests' :mod:`~tests.unit.sidecar.egress.target_server` (HTTPS on 127.0.0.1,
its own CA, ``localhost`` in its certificate).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from broker.testing import WEB_ID
from tests.integration.replicas import BROKER_CLI, BROKER_ID, ReplicaSet

__all__ = ["Sidecar", "TcpBalancer", "free_port", "start_sidecar", "start_workload_api", "wait_port"]

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"port {port} not served: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)


class TcpBalancer:
    """Round robin, one backend per accepted connection (a kube-proxy Service in miniature), on its own thread and
    event loop, so the test's blocking waits never stall it."""

    def __init__(self) -> None:
        self.backends: list[int] = []  # filled once the replicas have ports
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-balancer", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    def start(self) -> int:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = self.backends[self._next % len(self.backends)]
        self._next += 1
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend)
        except OSError:
            self._writers.discard(writer)
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)
        self._writers.difference_update((writer, up_writer))

    async def _shutdown(self) -> None:
        """Close the listener and every connection both ways, and wait for the pipes to end. A connection accepted
        just before the listener closed has a task that has not run yet: two loop turns let each such task register
        its writer before the writers are closed (a task cancelled before it runs would leave its socket open)."""
        if self._server is not None:
            self._server.close()
        for _ in range(2):
            await asyncio.sleep(0)
        for writer in list(self._writers):
            writer.close()
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def close(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@dataclass
class Sidecar:
    name: str
    proc: subprocess.Popen[bytes]
    egress_port: int
    socket: Path
    log: Path
    _log_file: IO[bytes] = field(repr=False)

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.egress_port}"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log_file.close()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")}


def start_workload_api(replicas: ReplicaSet, state_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """``spiffe-broker workload-api`` handing this process's uid the X.509-SVID of ``WEB_ID``.

    ``state_dir`` must hold the CA ``replicas`` forged its identities with (``DevCA.load_or_create``)."""
    sock = replicas.root / "workload.sock"
    argv = [*BROKER_CLI, "--log-level", "DEBUG", "workload-api", "--socket", str(sock), "--state-dir",
            str(state_dir), "--trust-domain", "example.org", "--register-uid", str(os.getuid()), "--spiffe-id",
            str(WEB_ID)]  # fmt: skip
    log = replicas.root / "workload-api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=_env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"workload-api did not start: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    return proc, sock


def start_sidecar(
    replicas: ReplicaSet, name: str, *, workload_api: Path, token_service: str, ca_file: Path, extra_config: str = ""
) -> Sidecar:
    """A sidecar whose token service is ``token_service`` (the balancer) and whose egress trusts ``ca_file``."""
    config = replicas.root / f"{name}.toml"
    config.write_text(f'[egress]\nca_file = "{ca_file}"\n{extra_config}')
    port, sock = free_port(), replicas.root / f"{name}.sock"
    argv = [*BROKER_CLI, "--log-level", "DEBUG", "sidecar", "--config", str(config), "--socket", str(sock),
            "--workload-api", f"unix://{workload_api}", "--token-service", token_service, "--token-service-id",
            str(BROKER_ID), "--egress-port", str(port)]  # fmt: skip
    log = replicas.root / f"{name}.log"
    log_file = log.open("wb")
    proc = subprocess.Popen(argv, env=_env(), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_port(port, proc, log)
    return Sidecar(name, proc, port, sock, log, log_file)
