"""A real, private PostgreSQL cluster for tests: ``initdb`` in a temporary directory, a Unix socket only.

* Binaries: ``$POSTGRES_BIN_DIR``, else the newest ``/usr/lib/postgresql/*/bin`` (Debian), else ``initdb`` on PATH.
  ``.ci/run`` installs Debian's ``postgresql`` where it is missing.
* PostgreSQL refuses to run as root, so as root the cluster runs as ``nobody`` (``runuser -u nobody``), in a
  directory handed to it; otherwise as the current user.
* ``listen_addresses=''`` and ``-k <dir>``: nothing listens on the network (PostgreSQL 15 docs, 20.3 "Connections
  and Authentication"). Authentication is ``scram-sha-256`` with a password from a file, so the store's
  ``password_file`` path is exercised too.
* Every wait is bounded: start (30 s), stop (``pg_ctl stop -m fast``, then SIGKILL of the process group).
  :meth:`PostgresCluster.pause` and :meth:`~PostgresCluster.resume` stop and restart it, for outage tests.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

__all__ = ["INSTALL_HINT", "PostgresCluster", "find_bin_dir", "running_cluster"]

INSTALL_HINT = "install PostgreSQL (apt-get install -y postgresql) or set POSTGRES_BIN_DIR"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
USER = "broker"


def find_bin_dir() -> Path | None:
    candidates: list[Path] = []
    if os.environ.get("POSTGRES_BIN_DIR"):
        candidates.append(Path(os.environ["POSTGRES_BIN_DIR"]))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "postgres").is_file():
            return candidate
    return None


class PostgresCluster:
    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="bpg-", dir="/tmp"))  # short: sun_path is ~100 bytes
        self.data = self.root / "data"
        self.socket_dir = self.root / "s"
        self.password_file = self.root / "password"
        self.log = self.root / "postgres.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self._runas: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self._runas = ["runuser", "-u", "nobody", "--"]
            self._owner = (nobody.pw_uid, nobody.pw_gid)
        else:
            self._owner = (os.geteuid(), os.getegid())

    def start(self) -> None:
        self.socket_dir.mkdir(mode=0o700)
        self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        self.password_file.chmod(0o600)
        for path in (self.root, self.socket_dir, self.password_file):
            os.chown(path, *self._owner)
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, "--auth=scram-sha-256", f"--pwfile={self.password_file}",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        self.resume()

    def resume(self) -> None:
        """Start ``postgres`` on the existing data directory and wait until it accepts connections."""
        settings = ["-c", "listen_addresses=", "-k", str(self.socket_dir)]
        if not self.durable:
            settings += ["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [*self._runas, str(self.bin_dir / "postgres"), "-D", str(self.data), *settings],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready()

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self._runas, str(self.bin_dir / tool), *args], capture_output=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.decode(errors='replace')}")

    @property
    def password(self) -> str:
        return self.password_file.read_text().removesuffix("\n")

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} user={USER} dbname={dbname} password={self.password}"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"postgres exited ({self._process.returncode}): {self.log_tail()}")
            try:
                with psycopg.connect(self.conninfo(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres not ready in {START_TIMEOUT_S:g} s: {self.log_tail()}") from None
                time.sleep(0.05)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""

    def create_database(self) -> str:
        """A new empty database; its name."""
        name = f"t{next(self._names)}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a name we made
        return name

    def url(self, dbname: str) -> str:
        """The store URL for ``dbname``: the socket directory as host, the password from the file."""
        return f"postgresql://{USER}@/{dbname}?host={self.socket_dir}&password_file={self.password_file}"

    def stop(self) -> None:
        """Stop the server and remove the cluster."""
        self.pause()
        shutil.rmtree(self.root, ignore_errors=True)

    def pause(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``, bounded), keeping the data for :meth:`resume`."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError, RuntimeError):
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-t", str(int(STOP_TIMEOUT_S)))
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def running_cluster() -> Iterator[PostgresCluster]:
    """A started private cluster, stopped on the way out; missing binaries fail the test (never a skip)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        import pytest

        pytest.fail(f"PostgreSQL binaries not found: {INSTALL_HINT}", pytrace=False)
    cluster = PostgresCluster(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
