"""The spine (token service, demo API, sidecar) as separate processes on a real SPIRE agent, for integration tests.

Identity separation: the agent's ``unix`` workload attestor tells processes apart by uid and gid. Every component
runs as a child process with this process's uid but its own primary gid (``Popen(group=..., extra_groups=[])``),
registered with the selectors ``[unix:uid:<uid>, unix:gid:<gid>]``; no entry selects on the uid alone, which would
match every process of the run. The gids 60101-60199 belong to these tests.

Entries are created once per SPIRE deployment (:func:`ensure_registered` is idempotent) and live as long as it
does. Every wait is a bounded poll; :class:`Processes` terminates (then kills) whatever it started. Nothing here
logs a token or a private key: SVID files go to private (0700) temporary directories removed afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker._sealing import generate_kek_file
from broker.testing.policy import policy_rule
from broker.testing.policy import policy_yaml as testing_policy_yaml
from tests.integration.spine_http import (
    Reply,
    free_port,
    http_ok,
    https_request,
    jwt_part,
    listening,
    tls_context,
    unix_get,
)
from tests.integration.spire import TRUST_DOMAIN, SpireDeployment, SpireError

__all__ = ["Reply", "https_request", "jwt_part", "tls_context"]

TD = f"spiffe://{TRUST_DOMAIN}"
DEMO_AUDIENCE = f"{TD}/it/demo-api"
DEMO_SCOPE = "hello:read"


@dataclass(frozen=True)
class Workload:
    """One identity: a SPIFFE ID, the gid its processes run with, and its entry's SVID settings."""

    name: str
    spiffe_id: str
    gid: int
    x509_ttl: int = 3600
    jwt_ttl: int = 300
    include_jti: bool = False
    jwt_svid_reuse: str | None = None  # the policy rule's jwt_svid_reuse (None: unset, the default single-use)

    @property
    def selectors(self) -> list[str]:
        return [f"unix:uid:{os.getuid()}", f"unix:gid:{self.gid}"]


BROKER = Workload("broker", f"{TD}/spiffe-broker", 60101)  # the sidecar's default token service ID
DEMO = Workload("demo-api", DEMO_AUDIENCE, 60102)
APP = Workload("app", f"{TD}/it/app", 60103)
ROTATING_APP = Workload("rotating-app", f"{TD}/it/rotating-app", 60104, x509_ttl=20, jwt_ttl=30)
OTHER = Workload("other", f"{TD}/it/other", 60105)  # valid SVID, not in the policy
JWT_PLAIN = Workload("jwt-plain", f"{TD}/it/jwt-plain", 60106, jwt_ttl=120)
JWT_JTI = Workload("jwt-jti", f"{TD}/it/jwt-jti", 60107, jwt_ttl=120, include_jti=True)
# JWT-SVIDs as jwt-spiffe client assertions: one identity per (reuse mode, -jwtSVIDIncludeJTI), each with a JWT-SVID
# TTL at the default assertion lifetime cap (60 s), so the agent hands out the same token for 30 s.
SINGLE_USE_JTI = Workload("su-jti", f"{TD}/it/assert/su-jti", 60108, jwt_ttl=60, include_jti=True,
                          jwt_svid_reuse="single-use")  # fmt: skip
SINGLE_USE_PLAIN = Workload("su-plain", f"{TD}/it/assert/su-plain", 60109, jwt_ttl=60, jwt_svid_reuse="single-use")
SENDER_BOUND_JTI = Workload("sb-jti", f"{TD}/it/assert/sb-jti", 60110, jwt_ttl=60, include_jti=True,
                            jwt_svid_reuse="sender-bound")  # fmt: skip
SENDER_BOUND_PLAIN = Workload("sb-plain", f"{TD}/it/assert/sb-plain", 60111, jwt_ttl=60,
                              jwt_svid_reuse="sender-bound")  # fmt: skip
JWT_ONLY = Workload("jwt-only", f"{TD}/it/assert/jwt-only", 60112, jwt_ttl=60, include_jti=True,
                    jwt_svid_reuse="sender-bound")  # fmt: skip  # presents no X.509-SVID: binds with DPoP
ASSERTION_CLIENTS = (SINGLE_USE_JTI, SINGLE_USE_PLAIN, SENDER_BOUND_JTI, SENDER_BOUND_PLAIN, JWT_ONLY)
ALL_WORKLOADS = (BROKER, DEMO, APP, ROTATING_APP, OTHER, JWT_PLAIN, JWT_JTI, *ASSERTION_CLIENTS)
POLICY_CLIENTS = (APP, ROTATING_APP, JWT_PLAIN, JWT_JTI, *ASSERTION_CLIENTS)


def _rule(workload: Workload) -> str:
    rule = policy_rule(spiffe_id=workload.spiffe_id, audiences=[DEMO_AUDIENCE], scopes=[DEMO_SCOPE],
                       max_token_lifetime=300)  # fmt: skip
    if workload.jwt_svid_reuse is not None:
        rule += f"    jwt_svid_reuse: {workload.jwt_svid_reuse}\n"
    return rule


def policy_yaml() -> str:
    return testing_policy_yaml(*(_rule(w) for w in POLICY_CLIENTS))


# -- registration ----------------------------------------------------------------------------------------------


def _entry_matches(entry: dict[str, Any], workload: Workload) -> bool:
    selectors = {f"{s['type']}:{s['value']}" for s in entry.get("selectors", [])}
    return selectors == set(workload.selectors)


def ensure_registered(spire: SpireDeployment, workloads: tuple[Workload, ...] = ALL_WORKLOADS) -> None:
    """Create the workloads' entries unless they exist; then wait until the agent serves each one exactly."""
    for workload in workloads:
        shown = json.loads(spire.server_cli("entry", "show", "-spiffeID", workload.spiffe_id, "-output", "json"))
        if not any(_entry_matches(entry, workload) for entry in shown.get("entries") or []):
            spire.create_entry(
                workload.spiffe_id,
                workload.selectors,
                x509_ttl=workload.x509_ttl,
                jwt_ttl=workload.jwt_ttl,
                include_jti=workload.include_jti,
            )
    wait_served(spire, workloads)


def agent_fetch(spire: SpireDeployment, workload: Workload, *args: str) -> subprocess.CompletedProcess[str]:
    """``spire-agent api fetch <args>`` run as ``workload`` (its gid), so the agent attests it as that workload."""
    argv = [str(spire.binaries.agent), "api", "fetch", *args, "-socketPath", spire.workload_socket]
    return run_as(workload, argv, timeout=20)


def served_ids(spire: SpireDeployment, workload: Workload) -> set[str]:
    """The SPIFFE IDs the agent hands ``workload`` now (empty if none). Reads only the IDs, never the keys."""
    result = agent_fetch(spire, workload, "x509", "-output", "json", "-timeout", "2s")
    if result.returncode != 0:
        return set()
    return {svid["spiffe_id"] for svid in json.loads(result.stdout).get("svids", [])}


def wait_served(spire: SpireDeployment, workloads: tuple[Workload, ...], *, timeout: float = 60.0) -> None:
    """Poll until the agent serves each workload its own SVID and no other (stale entries must be gone too)."""
    pending = list(workloads)
    deadline = time.monotonic() + timeout
    while pending:
        pending = [w for w in pending if served_ids(spire, w) != {w.spiffe_id}]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise SpireError(
                f"agent does not serve exactly {[w.spiffe_id for w in pending]}:\n{spire.log_tail('agent')}"
            )
        time.sleep(0.5)


# -- SVIDs as files ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SvidFiles:
    """An X509-SVID as the agent wrote it: chain PEM, key PEM and the trust bundle PEM."""

    cert: Path
    key: Path = field(repr=False)
    bundle: Path

    def x5t_s256(self) -> str:
        """RFC 8705 §3.1: base64url (no padding) of SHA-256 over the leaf's DER, computed here independently."""
        leaf = x509.load_pem_x509_certificates(self.cert.read_bytes())[0]
        digest = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def fetch_svid_files(spire: SpireDeployment, workload: Workload, dest: Path) -> SvidFiles:
    """``spire-agent api fetch x509 -write dest`` as ``workload``; ``dest`` should be in a private directory."""
    dest.mkdir(mode=0o700, exist_ok=True)
    result = agent_fetch(spire, workload, "x509", "-write", str(dest))
    if result.returncode != 0:
        raise SpireError(f"fetch x509 for {workload.name} failed: {result.stderr}")
    files = SvidFiles(dest / "svid.0.pem", dest / "svid.0.key", dest / "bundle.0.pem")
    if workload.spiffe_id not in result.stdout:
        raise SpireError(f"fetch x509 for {workload.name} did not return {workload.spiffe_id}")
    return files


def agent_x5t(spire: SpireDeployment, workload: Workload) -> str:
    """The ``x5t#S256`` of the X509-SVID the agent serves ``workload`` right now."""
    with private_dir() as dest:
        return fetch_svid_files(spire, workload, dest).x5t_s256()


def fetch_jwt_svid(spire: SpireDeployment, workload: Workload, audience: str) -> str:
    """A JWT-SVID for ``audience`` minted by SPIRE for ``workload`` (``spire-agent api fetch jwt``)."""
    result = agent_fetch(spire, workload, "jwt", "-audience", audience, "-output", "json")
    if result.returncode != 0:
        raise SpireError(f"fetch jwt for {workload.name} failed: {result.stderr}")
    svids = json.loads(result.stdout)[0]["svids"]
    token: str = svids[0]["svid"]
    return token


@contextlib.contextmanager
def private_dir(prefix: str = "it.") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def broker_argv(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("spiffe-broker")
    if script.is_file():
        return [str(script), *args]
    return [sys.executable, "-c", "from broker.cli.main import main; main()", *args]


def child_env(spire: SpireDeployment) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPIFFE_", "SPIRE_"))}
    env["SPIFFE_ENDPOINT_SOCKET"] = spire.workload_api_address
    return env


def run_as(
    workload: Workload, argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        group=workload.gid,
        extra_groups=[],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Processes:
    """Long-running children, each with a log file; :meth:`close` stops them all (terminate, wait, kill)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def spawn(self, name: str, workload: Workload, argv: list[str], env: dict[str, str]) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in close()
        self._logs.append(log)
        self._procs[name] = subprocess.Popen(
            argv, group=workload.gid, extra_groups=[], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def tails(self, lines: int = 20) -> str:
        return "\n".join(
            f"--- {name} log ---\n" + "\n".join(self.log(name).splitlines()[-lines:]) for name in self._procs
        )

    def check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.tails()}")

    def wait_for(self, what: str, ready: Callable[[], bool], *, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if ready():
                return
            time.sleep(0.2)
        raise AssertionError(f"{what} not within {timeout}s:\n{self.tails()}")

    def wait_for_log(self, name: str, text: str, *, since: int = 0, timeout: float = 30.0) -> None:
        """Wait until ``name``'s log holds ``text`` past character ``since`` (``len`` of an earlier :meth:`log`)."""
        self.wait_for(f"{name} logging {text!r}", lambda: text in self.log(name)[since:], timeout=timeout)

    def close(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for log in self._logs:
            log.close()
        self._logs.clear()


# -- HTTP from the test process ---------------------------------------------------------------------------------


# -- the spine ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallResult:
    """What ``spiffe-broker call -i`` printed: the HTTP status and body (status 0 if it printed none)."""

    returncode: int
    status: int
    body: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Spine:
    """Where the running token service, demo API and sidecar listen, and the processes themselves."""

    spire: SpireDeployment
    app: Workload
    root: Path
    procs: Processes
    config: str = ""  # the token service's TOML config file, if any (e.g. "[dpop]\nrequire_nonce = true\n")
    server_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    demo_port: int = field(default_factory=free_port)

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.server_port}"

    @property
    def sidecar_socket(self) -> Path:
        return self.root / "t.sock"

    def token(self, audience: str = DEMO_AUDIENCE, scope: str | None = None) -> Reply:
        """``GET /v1/token`` on the sidecar's socket, from this process."""
        query = {"audience": audience, **({"scope": scope} if scope else {})}
        return unix_get(self.sidecar_socket, "/v1/token?" + urlencode(query))

    def sidecar_ready(self) -> bool:
        try:
            return self.sidecar_socket.exists() and unix_get(self.sidecar_socket, "/readyz", timeout=2).status == 200
        except OSError:
            return False

    def call(self, *, audience: str = DEMO_AUDIENCE, scope: str | None = None) -> CallResult:
        """``spiffe-broker call https://<demo>/hello`` run as the app: mTLS with its SVID, token from its sidecar."""
        argv = broker_argv(
            "call",
            f"https://127.0.0.1:{self.demo_port}/hello",
            "--audience",
            audience,
            "--socket",
            str(self.sidecar_socket),
            "--server-id",
            DEMO.spiffe_id,
            "-i",
            *(["--scope", scope] if scope else []),
        )
        result = run_as(self.app, argv, env=child_env(self.spire))
        head, _, body = result.stdout.partition("\n\n")
        status_line = head.splitlines()[0] if head else ""
        status = int(status_line.split()[1]) if status_line.startswith("HTTP/") else 0
        return CallResult(result.returncode, status, body, result.stderr)

    def _kek(self) -> Path:
        path = self.root / "kek"
        if not path.exists():
            generate_kek_file(path)
        return path

    def start_server(self) -> None:
        (self.root / "policy.yaml").write_text(policy_yaml())
        config: tuple[str, ...] = ()
        if self.config:
            (self.root / "broker.toml").write_text(self.config)
            config = ("--config", str(self.root / "broker.toml"))
        argv = broker_argv(
            "server",
            *config,
            *("--listen", f"127.0.0.1:{self.server_port}", "--issuer", self.issuer),
            *("--state-dir", str(self.root / "state"), "--policy", str(self.root / "policy.yaml")),
            *("--health-port", str(self.health_port)),
            *("--kek-file", str(self._kek())),
        )
        self.procs.spawn("server", BROKER, argv, child_env(self.spire))
        self.procs.wait_for("token service /readyz", lambda: http_ok(self.health_port, "/readyz"))

    def start_demo_api(self) -> None:
        argv = broker_argv(
            "demo-api",
            *("--listen", f"127.0.0.1:{self.demo_port}", "--issuer", self.issuer, "--audience", DEMO_AUDIENCE),
        )
        self.procs.spawn("demo-api", DEMO, argv, child_env(self.spire))
        self.procs.wait_for("demo API listening", lambda: listening(self.demo_port))

    def start_sidecar(self) -> None:
        argv = broker_argv("sidecar", "--socket", str(self.sidecar_socket), "--token-service", self.issuer)
        self.procs.spawn("sidecar", self.app, argv, child_env(self.spire))
        self.procs.wait_for("sidecar /readyz", self.sidecar_ready)


@contextlib.contextmanager
def running_spine(
    spire: SpireDeployment,
    app: Workload,
    *,
    full: bool = True,
    keep_logs: Callable[[], bool] = lambda: False,
    config: str = "",
) -> Iterator[Spine]:
    """Register every test workload, start the token service (with ``config`` as its TOML config file, if any) and
    (``full``) the demo API and ``app``'s sidecar, each in its own process with its own identity; stop them all on
    exit (keeping the logs if ``keep_logs()``)."""
    ensure_registered(spire)
    with private_dir("spine.") as root:
        procs = Processes(root)
        spine = Spine(spire, app, root, procs, config)
        try:
            spine.start_server()
            if full:
                spine.start_demo_api()
                spine.start_sidecar()
            yield spine
        finally:
            procs.close()
            if keep_logs():
                kept = Path(tempfile.mkdtemp(prefix="spine-logs.", dir="/tmp"))
                for log in root.glob("*.log"):
                    shutil.copy(log, kept)
                print(f"\nspine process logs kept in {kept}", file=sys.__stderr__)


def spine_fixture(app: Workload, *, full: bool = True, name: str = "spine", config: str = "") -> Any:
    """A module-scoped fixture running the spine for ``app`` (the token service with ``config``, if any); when a
    test of the module failed the processes' logs are kept (their directory is printed)."""

    @pytest.fixture(scope="module", name=name)
    def fixture(request: pytest.FixtureRequest, spire: SpireDeployment) -> Iterator[Spine]:
        failed_before = request.session.testsfailed

        def failed() -> bool:
            return request.session.testsfailed > failed_before

        with running_spine(spire, app, full=full, keep_logs=failed, config=config) as s:
            yield s

    return fixture
