"""Two (or more) ``spiffe-broker server`` processes on one PostgreSQL database, and clients that talk to them.

Each replica is a real process started from the CLI with a file identity (``--cert/--key/--bundle/--jwt-bundle``)
forged by a :class:`~broker.devtools.devca.DevCA`, all with the same ``--issuer``, ``--store`` and ``--kek-file``
(issue 9: replicas share the keyring through the store; a change on one reaches the others via change events).
Clients speak mTLS with X.509-SVIDs of the same CA: the workload (``client_credentials``, RFC 6749 §4.4) and an
admin (``/admin/v1``). A verifier (:class:`~broker.verify.verifier.AccessTokenVerifier`) follows one replica's
JWKS: its RFC 8414 metadata and JWKS fetches for the shared issuer go to that replica's address.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
from cryptography.hazmat.primitives.serialization import Encoding

from broker._sealing import generate_kek_file
from broker.devtools.devca import DevCA
from broker.identity.spiffeid import SpiffeId
from broker.identity.svid import X509Svid
from broker.testing import API, WEB_ID
from broker.testing.policy import policy_rule, policy_yaml
from broker.verify.jwks import RemoteJwksProvider
from broker.verify.verifier import AccessTokenVerifier

__all__ = [
    "ADMIN_ID",
    "BROKER_CLI",
    "BROKER_ID",
    "ISSUER",
    "Replica",
    "ReplicaSet",
    "TokenClient",
    "jwks_kids",
    "nearest_rank",
    "token_claims",
    "token_kid",
]

ISSUER = "https://broker.test:8443"
BROKER_ID = SpiffeId.parse("spiffe://example.org/broker")
ADMIN_ID = SpiffeId.parse("spiffe://example.org/ops/admin")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
BROKER_CLI = [sys.executable, "-c", "from broker.cli.main import main; main()"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status) == 200
    except OSError:
        return False


@dataclass
class Replica:
    """One started ``spiffe-broker server``."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    health_port: int
    log: Path
    _log_file: IO[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not _ready(f"http://127.0.0.1:{self.health_port}/readyz"):
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready in {timeout:g} s: {self.log_tail()}")
            time.sleep(0.05)

    def exited_on_a_taken_port(self) -> bool:
        """Whether the process failed to start because its port was taken (waits until ready or exited)."""
        deadline = time.monotonic() + START_TIMEOUT
        while self.proc.poll() is None and time.monotonic() < deadline:
            if _ready(f"http://127.0.0.1:{self.health_port}/readyz"):
                return False
            time.sleep(0.05)
        return self.proc.poll() is not None and "address already in use" in self.log_tail()

    def kill(self) -> None:
        """SIGKILL: no drain, no clean close (a crash)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self._log_file.close()

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


@dataclass
class ReplicaSet:
    """The files every replica shares (identity, policy, KEK, config) and the replicas started from them."""

    store_url: str
    config: str
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rep-", dir="/tmp")))
    ca: DevCA = field(default_factory=lambda: DevCA.ephemeral("example.org"), repr=False)
    replicas: list[Replica] = field(default_factory=list)
    issuer: str = ISSUER  # the one address every replica answers for (a load balancer's, in production)
    log_level: str = "INFO"
    policy: str = field(default_factory=lambda: policy_yaml(policy_rule(spiffe_id=WEB_ID, max_token_lifetime=60)))

    def __post_init__(self) -> None:
        server = self.ca.issue_x509_svid(BROKER_ID, ttl=3600)
        _write(self.root / "cert.pem", server.chain_pem())
        _write(self.root / "key.pem", server.key_pem())
        _write(self.root / "bundle.pem", self.ca.x509_bundle().to_pem())
        _write(self.root / "jwks.json", self.ca.jwks())
        _write(self.root / "policy.yaml", self.policy.encode())
        _write(self.root / "config.toml", self.config.encode())
        generate_kek_file(self.root / "kek")

    def svid(self, spiffe_id: SpiffeId | str) -> X509Svid:
        return self.ca.issue_x509_svid(SpiffeId.parse(str(spiffe_id)), ttl=3600)

    def client_context(self, svid: X509Svid) -> ssl.SSLContext:
        """mTLS presenting ``svid``, trusting the dev CA (the server's SPIFFE ID is not checked: loopback test)."""
        context = ssl.create_default_context(cadata=self.ca.x509_bundle().to_pem().decode())
        context.check_hostname = False
        name = f"c{len(list(self.root.glob('c*.pem')))}"
        cert = _write(self.root / f"{name}.pem", svid.chain_pem())
        key = _write(self.root / f"{name}.key", svid.key_pem())
        context.load_cert_chain(cert, key)
        return context

    def admin_cli_options(self, replica: Replica) -> list[str]:
        """The remote options of an admin CLI command (``keys``, ``quarantine``) aimed at ``replica``."""
        svid = self.svid(ADMIN_ID)
        cert, key = _write(self.root / "admin.pem", svid.chain_pem()), _write(self.root / "admin.key", svid.key_pem())
        return [
            "--admin-url", replica.url, "--server-id", str(BROKER_ID), "--cert", str(cert), "--key", str(key),
            "--bundle", f"example.org={self.root / 'bundle.pem'}",
        ]  # fmt: skip

    def client(self, spiffe_id: SpiffeId | str) -> TokenClient:
        """A :class:`TokenClient` presenting a fresh X.509-SVID for ``spiffe_id``."""
        svid = self.svid(spiffe_id)
        return TokenClient(self.client_context(svid), svid)

    def spawn(self, name: str) -> Replica:
        """Start a replica (does not wait: :meth:`Replica.wait_ready`)."""
        port, health = _free_port(), _free_port()
        argv = [
            *BROKER_CLI, "--log-level", self.log_level, "server", "--config", str(self.root / "config.toml"),
            "--listen", f"127.0.0.1:{port}",
            "--issuer", self.issuer, "--state-dir", str(self.root / f"state-{name}"), "--policy",
            str(self.root / "policy.yaml"), "--cert", str(self.root / "cert.pem"), "--key", str(self.root / "key.pem"),
            "--bundle", str(self.root / "bundle.pem"), "--jwt-bundle", f"example.org={self.root / 'jwks.json'}",
            "--health-port", str(health), "--store", self.store_url, "--kek-file", str(self.root / "kek"),
            "--admin-id", str(ADMIN_ID),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")}
        log = self.root / f"{name}.log"
        log_file = log.open("wb")
        proc = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        replica = Replica(name, proc, port, health, log, log_file)
        self.replicas.append(replica)
        return replica

    def start(self, *names: str) -> list[Replica]:
        """Start the replicas at the same time (they race to migrate and create the keyring), wait for all.

        A free port can be taken by another socket between the probe and the bind (busy clients use ephemeral
        ports too): a replica that exits for that reason is started again on new ports, up to 3 times.
        """
        started = [self.spawn(name) for name in names]
        for index, replica in enumerate(started):
            for _ in range(3):
                if not replica.exited_on_a_taken_port():
                    break
                self.replicas.remove(replica)
                replica.stop()
                replica = started[index] = self.spawn(replica.name)
            replica.wait_ready()
        return started

    def close(self) -> None:
        for replica in self.replicas:
            replica.stop()
        for path in self.root.glob("*"):
            if path.is_file():
                path.unlink()


def _b64json(part: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def token_kid(token: str) -> str:
    return str(_b64json(token.split(".")[0])["kid"])


def token_claims(token: str) -> dict[str, Any]:
    return _b64json(token.split(".")[1])


def nearest_rank(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * int(fraction * 1000) // 1000) - 1)]


async def jwks_kids(session: aiohttp.ClientSession, replica: Replica) -> frozenset[str]:
    async with session.get(f"{replica.url}/jwks.json") as response:
        assert response.status == 200, await response.text()
        document = await response.json()
    return frozenset(str(key["kid"]) for key in document["keys"])


class TokenClient:
    """The workload, or an admin: one keep-alive mTLS session; tokens by ``client_credentials``."""

    def __init__(self, context: ssl.SSLContext, svid: X509Svid, *, limit: int = 100) -> None:
        self.svid = svid
        connector = aiohttp.TCPConnector(ssl=context, limit=limit)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10))

    @property
    def certificate_der(self) -> bytes:
        return self.svid.leaf.public_bytes(Encoding.DER)

    async def token(self, replica: Replica) -> str:
        form = {"grant_type": "client_credentials", "audience": API, "scope": "orders:read"}
        async with self.session.post(f"{replica.url}/token", data=form) as response:
            body = await response.json()
            assert response.status == 200, body
        return str(body["access_token"])

    async def admin(self, replica: Replica, path: str) -> dict[str, Any]:
        async with self.session.post(f"{replica.url}/admin/v1{path}", json={"reason": "test"}) as response:
            body: dict[str, Any] = await response.json()
            assert response.status == 200, body
        return body

    def verifier(self, replica: Replica, *, max_age: float, min_refetch_interval: float) -> AccessTokenVerifier:
        """A resource server's verifier for the shared issuer whose metadata and JWKS come from ``replica``."""

        async def fetch_json(url: str) -> object:
            assert url.startswith(ISSUER), url
            async with self.session.get(replica.url + url.removeprefix(ISSUER)) as response:
                assert response.status == 200
                return await response.json()

        provider = RemoteJwksProvider(
            issuer=ISSUER, fetch_json=fetch_json, max_age=max_age, min_refetch_interval=min_refetch_interval
        )
        return AccessTokenVerifier(issuer=ISSUER, audience=API, jwks=provider, leeway=0)

    async def aclose(self) -> None:
        await self.session.close()
