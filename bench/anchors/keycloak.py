"""Keycloak 26.7.3 from Maven Central, started in production mode (``kc.sh start --optimized``) on loopback.

* The distribution is ``org.keycloak:keycloak-quarkus-dist:26.7.3`` (zip, checked against Maven Central's
  ``.sha1``), cached with its unpacked tree under ``~/.cache/spiffe-broker/keycloak-26.7.3/``.
* ``kc.sh build`` runs once per set of build options (``--db=dev-file``, ``--health-enabled=true``, the features
  ``spiffe`` and ``client-auth-federated``, local caches, ``https-client-auth=request``); a marker file records
  the options last built.
* ``kc.sh start --optimized``: HTTPS only on 127.0.0.1 with a P-256 certificate from the test CA
  (:mod:`bench.anchors.tlsfiles`), ``truststore-paths`` holding the test root (for
  the bundle endpoint) and the broker's dev CA (for client X.509-SVIDs), the embedded H2 file database (its
  ``data/`` directory is wiped first, so every run starts from the bootstrap admin), ``--cache=local`` (no
  cluster discovery), log level WARN to the run directory's log file (nothing logged per request), and the heap
  fixed by ``JAVA_OPTS_KC_HEAP`` (:data:`HEAP`).
* ``kc.sh`` forks the JVM; the measured process is that ``java`` child (its own ``/proc/<pid>/stat``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bench.anchors.tlsfiles import TestCa
from bench.procs import Child, free_port, spawn, wait_until

__all__ = ["HEAP", "JAVA_HOME", "KEYCLOAK_VERSION", "KeycloakProcess", "ensure_dist", "java_version", "start"]

KEYCLOAK_VERSION = "26.7.3"
JAVA_HOME = Path("/usr/lib/jvm/temurin-25-jdk-amd64")
HEAP = "-Xms1g -Xmx1g"
CACHE = Path.home() / ".cache" / "spiffe-broker" / f"keycloak-{KEYCLOAK_VERSION}"
CENTRAL = "https://repo1.maven.org/maven2/org/keycloak/keycloak-quarkus-dist"
BUILD_OPTIONS = ("--db=dev-file", "--health-enabled=true", "--features=spiffe,client-auth-federated",
                 "--cache=local", "--https-client-auth=request")  # fmt: skip
START_TIMEOUT = 240.0
STOP_TIMEOUT = 30.0
ADMIN = ("bench-admin", "bench-admin-password")


def _download(url: str, target: Path) -> None:
    with urllib.request.urlopen(url, timeout=600) as response, target.open("wb") as out:  # Maven Central
        shutil.copyfileobj(response, out)


def ensure_dist() -> Path:
    """The unpacked distribution's home (downloaded and checked on first use)."""
    home = CACHE / f"keycloak-{KEYCLOAK_VERSION}"
    if (home / "bin" / "kc.sh").exists():
        return home
    CACHE.mkdir(parents=True, exist_ok=True)
    name = f"keycloak-quarkus-dist-{KEYCLOAK_VERSION}.zip"
    archive = CACHE / name
    if not archive.exists():
        _download(f"{CENTRAL}/{KEYCLOAK_VERSION}/{name}", archive.with_suffix(".part"))
        archive.with_suffix(".part").rename(archive)
    with urllib.request.urlopen(f"{CENTRAL}/{KEYCLOAK_VERSION}/{name}.sha1", timeout=60) as response:
        expected = response.read().decode().split()[0]
    if hashlib.sha1(archive.read_bytes(), usedforsecurity=False).hexdigest() != expected:
        raise RuntimeError(f"{archive} does not match Maven Central's SHA-1; delete it and retry")
    with zipfile.ZipFile(archive) as unpacked:
        unpacked.extractall(CACHE)
    (home / "bin" / "kc.sh").chmod(0o755)
    return home


def _env() -> dict[str, str]:
    return {"JAVA_HOME": str(JAVA_HOME), "PATH": f"{JAVA_HOME / 'bin'}:{os.environ.get('PATH', '')}",
            "JAVA_OPTS_KC_HEAP": HEAP}  # fmt: skip


def java_version() -> str:
    done = subprocess.run([str(JAVA_HOME / "bin" / "java"), "-version"], capture_output=True, text=True, timeout=60,
                          check=True)  # fmt: skip
    return " / ".join(line.strip() for line in done.stderr.splitlines() if line.strip())


def _build(home: Path) -> None:
    """``kc.sh build`` unless the last build used the same options."""
    marker = home / "data-build-options.txt"
    wanted = " ".join(BUILD_OPTIONS)
    if marker.exists() and marker.read_text() == wanted:
        return
    done = subprocess.run([str(home / "bin" / "kc.sh"), "build", *BUILD_OPTIONS], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **_env()}, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"kc.sh build failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    marker.write_text(wanted)


@dataclass
class KeycloakProcess(Child):
    """``kc.sh`` (stopped by SIGTERM, which it forwards) and its ``java`` child, which is what is measured."""

    java_pid: int = 0
    port: int = 0
    management_port: int = 0

    @property
    def pid(self) -> int:
        return self.java_pid or self.proc.pid

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.port}/realms/bench"

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to the JVM (found now if start-up was cut short) and ``kc.sh``; SIGKILL the JVM after ``timeout``.

        ``kc.sh`` forwards SIGTERM, but killing ``kc.sh`` alone would leave the JVM running."""
        java = self.java_pid or _java_child(self.proc.pid, missing_ok=True)
        if java:
            with contextlib.suppress(ProcessLookupError):
                os.kill(java, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while Path(f"/proc/{java}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.kill(java, signal.SIGKILL)
        super().stop(timeout)


def _java_child(parent: int, *, missing_ok: bool = False) -> int:
    """The ``java`` child of ``kc.sh`` (0 if there is none and ``missing_ok``)."""
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{parent}/task").iterdir():
            for child in (task / "children").read_text().split():
                if Path(f"/proc/{child}/comm").read_text().strip() == "java":
                    return int(child)
    if missing_ok:
        return 0
    raise RuntimeError("kc.sh has no java child process")


def _ready(url: str, context: ssl.SSLContext) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as response:  # loopback health endpoint
        return int(response.status) == 200


def _start_argv(home: Path, ca: TestCa, client_ca: Path, port: int, management: int) -> list[str]:
    return [str(home / "bin" / "kc.sh"), "start", "--optimized", "--http-enabled=false", "--http-host=127.0.0.1",
            f"--https-port={port}", f"--hostname=https://127.0.0.1:{port}", f"--http-management-port={management}",
            f"--https-certificate-file={ca.cert}", f"--https-certificate-key-file={ca.key}",
            f"--truststore-paths={ca.root},{client_ca}", "--log-level=warn",
            "--log=console"]  # fmt: skip


def start(ca: TestCa, client_ca: Path, log_dir: Path) -> KeycloakProcess:
    """Build if needed, wipe the H2 data, start, and wait (bounded) until ``/health/ready`` answers 200."""
    home = ensure_dist()
    _build(home)
    shutil.rmtree(home / "data", ignore_errors=True)
    port, management = free_port(), free_port()
    env = {**_env(), "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN[0], "KC_BOOTSTRAP_ADMIN_PASSWORD": ADMIN[1]}
    child = spawn("keycloak", _start_argv(home, ca, client_ca, port, management), log_dir=log_dir, env=env)
    found = KeycloakProcess(**vars(child), port=port, management_port=management)
    context = ssl.create_default_context(cafile=str(ca.root))
    context.check_hostname = False
    try:
        url = f"https://127.0.0.1:{management}/health/ready"
        wait_until(lambda: _ready(url, context), timeout=START_TIMEOUT, what="Keycloak's /health/ready", child=found)
        found.java_pid = _java_child(child.pid)
    except BaseException:
        found.stop()
        raise
    return found
