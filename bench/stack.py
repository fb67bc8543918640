"""The broker as deployed, one process per part, in a private /tmp directory with short socket paths.

* ``spiffe-broker workload-api``: the dev Workload API, ``spiffe://bench.example/workload`` registered for our uid.
* ``spiffe-broker server``: the token service, its X.509-SVID (``spiffe://bench.example/spiffe-broker``) and the
  bundles given as files (``--cert/--key/--bundle/--jwt-bundle``), issued by the same dev CA (loaded from the
  Workload API's state directory) that the Workload API uses; plain-HTTP ``/readyz`` on a health port.
* ``spiffe-broker sidecar``: against both, serving ``/v1/token`` on a Unix socket.

The harness also writes what the load generator needs to act as the workload towards the token service: the
workload's X.509-SVID and key as PEM files, the CA bundle, and a JWT-SVID for the token service's audience.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import aiohttp
import yaml

from bench.procs import BROKER_CLI, Child, free_port, port_open, spawn, wait_until
from broker._files import write_private_file
from broker._sealing import generate_kek_file
from broker.devtools.devca import DevCA
from broker.identity.spiffeid import SpiffeId, TrustDomain

__all__ = ["AUDIENCE", "SCOPE", "BrokerStack", "StackFiles", "fetch_unix"]

TRUST_DOMAIN = TrustDomain.parse("bench.example")
WORKLOAD_ID = SpiffeId(TRUST_DOMAIN, "/workload")
BROKER_ID = SpiffeId(TRUST_DOMAIN, "/spiffe-broker")
AUDIENCE = "https://api.bench.example"
SCOPE = "orders:read"
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class StackFiles:
    """Paths in the run directory (short: socket paths must stay under ~100 bytes)."""

    root: Path

    def __post_init__(self) -> None:
        names = {
            "api_state": "wl", "api_socket": "api.sock", "sidecar_socket": "sc.sock", "ref_socket": "ref.sock",
            "server_state": "srv", "policy": "policy.yaml", "server_cert": "srv.pem", "server_key": "srv.key",
            "bundle": "bundle.pem", "jwt_bundle": "jwks.json", "client_cert": "cli.pem", "client_key": "cli.key",
            "logs": "logs",
        }  # fmt: skip
        for attribute, name in names.items():
            object.__setattr__(self, attribute, self.root / name)

    api_state: Path = field(init=False)
    api_socket: Path = field(init=False)
    sidecar_socket: Path = field(init=False)
    ref_socket: Path = field(init=False)
    server_state: Path = field(init=False)
    policy: Path = field(init=False)
    server_cert: Path = field(init=False)
    server_key: Path = field(init=False)
    bundle: Path = field(init=False)
    jwt_bundle: Path = field(init=False)
    client_cert: Path = field(init=False)
    client_key: Path = field(init=False)
    logs: Path = field(init=False)


def _policy() -> str:
    rule = {"spiffe_id": str(WORKLOAD_ID), "audiences": [AUDIENCE], "scopes": [SCOPE], "max_token_lifetime": 1800}
    return yaml.safe_dump({"rules": [rule]})


def _write_identity(files: StackFiles) -> DevCA:
    """The dev CA in the Workload API's state dir, and the file identities it issues for the harness."""
    files.api_state.mkdir(mode=0o700)
    ca = DevCA.load_or_create(files.api_state, TRUST_DOMAIN)
    server = ca.issue_x509_svid(BROKER_ID, ttl=3600)
    client = ca.issue_x509_svid(WORKLOAD_ID, ttl=3600)
    write_private_file(files.server_cert, server.chain_pem())
    write_private_file(files.server_key, server.key_pem())
    write_private_file(files.client_cert, client.chain_pem())
    write_private_file(files.client_key, client.key_pem())
    write_private_file(files.bundle, ca.x509_bundle().to_pem())
    write_private_file(files.jwt_bundle, ca.jwks())
    write_private_file(files.policy, _policy().encode())
    return ca


async def _get_unix(socket_path: Path, path: str) -> tuple[int, bytes, dict[str, str]]:
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path))) as session,
        session.get(f"http://localhost{path}") as response,
    ):
        return response.status, await response.read(), dict(response.headers)


def fetch_unix(socket_path: Path, path: str) -> tuple[int, bytes, dict[str, str]]:
    """One GET over a Unix socket (status, body, headers)."""
    return asyncio.run(_get_unix(socket_path, path))


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # the server's plain-HTTP health port
        return int(response.status) == 200


@dataclass
class BrokerStack:
    """The started processes; use as a context manager (stops everything, removes the run directory)."""

    files: StackFiles
    ca: DevCA = field(repr=False)
    server_port: int = 0
    children: dict[str, Child] = field(default_factory=dict)
    keep: bool = False

    @classmethod
    def create(cls, *, keep: bool = False) -> BrokerStack:
        files = StackFiles(Path(tempfile.mkdtemp(prefix="sbb-", dir="/tmp")))
        files.logs.mkdir()
        return cls(files=files, ca=_write_identity(files), keep=keep)

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.server_port}"

    def start_workload_api(self) -> Child:
        argv = [*BROKER_CLI, "workload-api", "--socket", str(self.files.api_socket), "--state-dir",
                str(self.files.api_state), "--trust-domain", TRUST_DOMAIN.name, "--register-uid", str(os.getuid()),
                "--spiffe-id", str(WORKLOAD_ID)]  # fmt: skip
        child = self._spawn("workload-api", argv)
        wait_until(self.files.api_socket.exists, timeout=START_TIMEOUT, what="the Workload API socket", child=child)
        return child

    def _kek(self) -> Path:
        path = self.files.server_state.parent / "kek"
        if not path.exists():
            generate_kek_file(path)
        return path

    def start_server(self, *, log_level: str = "INFO") -> Child:
        child, self.server_port = self.start_named_server("server", log_level=log_level)
        return child

    def start_named_server(
        self,
        name: str,
        *,
        issuer: str | None = None,
        store_url: str | None = None,
        env: dict[str, str] | None = None,
        log_level: str = "INFO",
    ) -> tuple[Child, int]:
        """A token service named ``name`` and its port: its own state dir; ``issuer`` (else from its address; replicas
        share one), ``store_url`` (else SQLite in the state dir), ``env`` (extra ``SPIFFE_BROKER_*`` settings).
        All share the KEK, the policy and the identity."""
        port = free_port()
        health = free_port()
        state = self.files.server_state if name == "server" else self.files.root / name
        argv = [*BROKER_CLI, "--log-level", log_level, "server", "--listen", f"127.0.0.1:{port}",
                "--state-dir", str(state), "--policy", str(self.files.policy),
                "--cert", str(self.files.server_cert), "--key", str(self.files.server_key),
                "--bundle", str(self.files.bundle), "--jwt-bundle", str(self.files.jwt_bundle),
                "--health-port", str(health), "--kek-file", str(self._kek())]  # fmt: skip
        if issuer is not None:
            argv += ["--issuer", issuer]
        if store_url is not None:
            argv += ["--store", store_url]
        child = self._spawn(name, argv, env=env)
        url = f"http://127.0.0.1:{health}/readyz"
        wait_until(
            lambda: _http_ok(url), timeout=START_TIMEOUT, what=f"the token service {name}'s /readyz", child=child
        )
        return child, port

    def start_sidecar(self) -> Child:
        argv = [*BROKER_CLI, "sidecar", "--socket", str(self.files.sidecar_socket), "--token-service", self.issuer,
                "--workload-api", f"unix://{self.files.api_socket}"]  # fmt: skip
        child = self._spawn("sidecar", argv)

        def ready() -> bool:
            return self.files.sidecar_socket.exists() and fetch_unix(self.files.sidecar_socket, "/readyz")[0] == 200

        wait_until(ready, timeout=START_TIMEOUT, what="the sidecar's /readyz", child=child)
        return child

    def start_reference(self, body: bytes) -> Child:
        body_file = self.files.root / "ref-body.json"
        write_private_file(body_file, body)
        argv = [sys.executable, "-m", "bench.refserver", "token", "--socket", str(self.files.ref_socket),
                "--body-file", str(body_file)]  # fmt: skip
        child = self._spawn("reference", argv)
        wait_until(self.files.ref_socket.exists, timeout=START_TIMEOUT, what="the reference socket", child=child)
        return child

    def start_exchange_reference(self) -> tuple[Child, int]:
        """The bare aiohttp + mTLS + verify/sign server (``bench.refserver exchange``) and its port."""
        port = free_port()
        argv = [sys.executable, "-m", "bench.refserver", "exchange", "--port", str(port),
                "--cert", str(self.files.server_cert), "--key", str(self.files.server_key),
                "--ca", str(self.files.bundle)]  # fmt: skip
        child = self._spawn("exchange-reference", argv)
        wait_until(lambda: port_open(port), timeout=START_TIMEOUT, what="the exchange reference", child=child)
        return child, port

    def jwt_svid(self, *, ttl: float = 900, issuer: str | None = None) -> str:
        """A JWT-SVID of the workload for the token service (``aud`` = its issuer URL, or ``issuer``)."""
        return self.ca.mint_jwt_svid(WORKLOAD_ID, [issuer or self.issuer], ttl=ttl).token

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = spawn(name, argv, log_dir=self.files.logs, env={"PYTHONUNBUFFERED": "1", **(env or {})})
        self.children[name] = child
        return child

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for name in reversed(list(self.children)):
            self.children[name].stop()
        if not self.keep:
            shutil.rmtree(self.files.root, ignore_errors=True)
