"""``spiffe-broker sidecar`` as a real process: signals in every waiting phase, ``--once`` and token files.

The Workload API (the dev server, one entry for this test's uid) and the token service run on an event loop in a
background thread; the sidecar is a subprocess, as an init container or a pod would run it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.devtools.devca import DevCA
from broker.devtools.workload_api.entries import InMemoryEntryStore, RegistrationEntry, Selector
from broker.devtools.workload_api.server import WorkloadApiServer
from broker.identity.memory import InMemorySvidSource
from broker.jose.jws import parse_compact
from tests.unit.sidecar.sidecar_helpers import API, BROKER_ID, WEB_ID, short_tmpdir, start_real_token_service

STOP_WITHIN = 3.0  # seconds from the signal to the exit


class Backdrop:
    """The Workload API and the token service on a loop in a background thread."""

    def __init__(self, directory: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.directory = directory
        self.ca = DevCA.ephemeral("example.org")
        self.run(self._start())

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    async def _start(self) -> None:
        entries = InMemoryEntryStore([RegistrationEntry(WEB_ID, frozenset({Selector("uid", os.geteuid())}))])
        self.wlapi = WorkloadApiServer(ca=self.ca, entries=entries, socket_path=self.directory / "wl.sock")
        await self.wlapi.start()
        self.token_service = await start_real_token_service(InMemorySvidSource(self.ca, BROKER_ID))

    async def _stop(self) -> None:
        await self.token_service.stop()
        await self.wlapi.stop()

    def close(self) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def backdrop() -> Iterator[Backdrop]:
    with short_tmpdir() as directory:
        running = Backdrop(directory)
        try:
            yield running
        finally:
            running.close()


@pytest.fixture
def workdir() -> Iterator[Path]:
    with short_tmpdir() as directory:
        yield directory


class Sidecar:
    """``python -m broker.cli sidecar ARGS``; stderr is collected by a thread so nothing blocks."""

    def __init__(self, *args: str, env_extra: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")}
        env.update(env_extra or {})
        command = [sys.executable, "-m", "broker.cli", "sidecar", *args]
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for_line(self, text: str, timeout: float = 20.0) -> None:
        with self._changed:
            found = self._changed.wait_for(lambda: any(text in line for line in self.lines), timeout)
        assert found, f"no line with {text!r} in {self.lines}"

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        returncode = self.process.wait(timeout)
        self._reader.join(5)
        return returncode, "".join(self.lines)

    def signal_and_time(self, sig: signal.Signals) -> tuple[int, float, str]:
        started = time.monotonic()
        self.process.send_signal(sig)
        returncode, stderr = self.finish(STOP_WITHIN + 5)
        return returncode, time.monotonic() - started, stderr

    def kill(self) -> None:
        """Kill it if it still runs, and close the pipe."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(5)
        assert self.process.stderr is not None
        self.process.stderr.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_while_waiting_for_the_first_svid_stops_the_sidecar_at_once(workdir: Path, sig: signal.Signals) -> None:
    nothing = f"unix://{workdir}/nothing.sock"  # no Workload API behind it
    sidecar = Sidecar("--socket", str(workdir / "s.sock"), "--token-service", "https://127.0.0.1:1",
                      "--workload-api", nothing)  # fmt: skip
    try:
        sidecar.wait_for_line("is not available yet")  # waiting for the Workload API and its first SVID
        returncode, elapsed, stderr = sidecar.signal_and_time(sig)
    finally:
        sidecar.kill()
    assert elapsed < STOP_WITHIN, stderr
    assert returncode == 0, stderr
    assert "Traceback" not in stderr
    assert not (workdir / "s.sock").exists()


def test_signal_while_once_waits_stops_at_once_with_a_one_line_reason(workdir: Path) -> None:
    token_file = f"path={workdir / 't'},audience={API}"
    sidecar = Sidecar("--once", "--token-file", token_file, "--token-service", "https://127.0.0.1:1",
                      "--workload-api", f"unix://{workdir}/nothing.sock")  # fmt: skip
    try:
        sidecar.wait_for_line("is not available yet")
        returncode, elapsed, stderr = sidecar.signal_and_time(signal.SIGTERM)
    finally:
        sidecar.kill()
    assert elapsed < STOP_WITHIN, stderr
    assert returncode == 1
    assert stderr.splitlines()[-1] == "Error: token_file_error: interrupted before the token files were written"


def test_once_writes_every_token_file_and_exits_zero(backdrop: Backdrop, workdir: Path) -> None:
    config = workdir / "sidecar.toml"
    config.write_text(
        f'[[sidecar.token_files]]\npath = "{workdir / "write"}"\naudience = "{API}"\nscope = "orders:write"\n'
    )
    sidecar = Sidecar("--config", str(config), "--once", "--token-service", backdrop.token_service.issuer,
                      "--workload-api", backdrop.wlapi.address,
                      "--token-file", f"path={workdir / 'read'},audience={API},scope=orders:read,mode=640")  # fmt: skip
    try:
        returncode, stderr = sidecar.finish()
    finally:
        sidecar.kill()
    assert returncode == 0, stderr
    assert "wrote 1 token file(s)" in stderr  # flags replace the file's list, as for every setting
    claims = parse_compact((workdir / "read").read_text()).payload
    assert (claims["aud"], claims["scope"]) == (API, "orders:read")
    assert stat.S_IMODE(os.stat(workdir / "read").st_mode) == 0o640
    assert not (workdir / "write").exists()
    assert claims["sub"] == str(WEB_ID)


def test_once_refused_by_policy_exits_non_zero_at_once(backdrop: Backdrop, workdir: Path) -> None:
    files = json.dumps([{"path": str(workdir / "t"), "audience": "https://not-allowed.example"}])
    sidecar = Sidecar("--once", "--once-timeout", "20", "--token-service", backdrop.token_service.issuer,
                      "--workload-api", backdrop.wlapi.address,
                      env_extra={"SPIFFE_BROKER_SIDECAR__TOKEN_FILES": files})  # fmt: skip
    try:
        returncode, stderr = sidecar.finish()
    finally:
        sidecar.kill()
    assert returncode == 1
    last = stderr.splitlines()[-1]
    assert last.startswith("Error: token_file_error: ")
    assert "refused by the token service: invalid_target" in last
    assert not (workdir / "t").exists()


def test_once_with_an_unreachable_token_service_gives_up_after_its_timeout(backdrop: Backdrop, workdir: Path) -> None:
    started = time.monotonic()
    sidecar = Sidecar("--once", "--once-timeout", "1.5", "--token-file", f"path={workdir / 't'},audience={API}",
                      "--token-service", "https://127.0.0.1:1", "--workload-api", backdrop.wlapi.address)  # fmt: skip
    try:
        returncode, stderr = sidecar.finish()
    finally:
        sidecar.kill()
    assert returncode == 1
    assert time.monotonic() - started < 15
    last = stderr.splitlines()[-1]
    assert last.startswith("Error: token_file_error: token files not written within 1.5s: ")
    assert "token service unreachable" in last
    assert "Traceback" not in stderr


def test_token_files_only_are_kept_until_sigterm(backdrop: Backdrop, workdir: Path) -> None:
    sidecar = Sidecar("--token-file", f"path={workdir / 't'},audience={API}",
                      "--token-service", backdrop.token_service.issuer,
                      "--workload-api", backdrop.wlapi.address)  # fmt: skip
    try:
        sidecar.wait_for_line("wrote the token for")
        returncode, elapsed, stderr = sidecar.signal_and_time(signal.SIGTERM)
    finally:
        sidecar.kill()
    assert (returncode, elapsed < STOP_WITHIN) == (0, True), stderr
    assert parse_compact((workdir / "t").read_text()).payload["aud"] == API
    assert not list(workdir.glob("*.sock"))
