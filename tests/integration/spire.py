"""A real SPIRE deployment for integration tests: one spire-server and one spire-agent on loopback.

Server: sqlite3 datastore, ``join_token`` node attestor, ``memory`` key manager, bound to 127.0.0.1 on a free
port, admin API on a Unix socket. Agent: attested with a join token whose SPIFFE ID is fixed
(:data:`AGENT_ID`, so entries can name it as parent), ``unix`` workload attestor, ``disk`` key manager (so a
restarted agent resumes from the SVID it saved in its data dir: join tokens are single-use).

With ``upstream_authority=True`` the server also has the ``disk`` UpstreamAuthority with a root CA the fixture
generates (:mod:`upstream_root`): the bundle is that root, SPIRE's own CA is an intermediate under it, and every
X509-SVID comes as leaf + intermediate.

Binaries come from ``SPIRE_BIN_DIR`` or scripts/build-spire.sh's default cache directory. Every wait is a
bounded poll; :meth:`SpireDeployment.close` stops both processes (terminate, wait, kill) and removes the
temporary directory. Nothing here logs a join token or a private key.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.integration.upstream_root import write_upstream_root

TRUST_DOMAIN = "example.org"
AGENT_ID = f"spiffe://{TRUST_DOMAIN}/agent/test"
SPIRE_VERSION = "v1.15.3"
BUILD_HINT = "build them with scripts/build-spire.sh (or point SPIRE_BIN_DIR at a directory holding them)"


def default_bin_dir() -> Path:
    """scripts/build-spire.sh's cache directory (same defaults)."""
    if os.environ.get("SPIRE_BIN_DIR"):
        return Path(os.environ["SPIRE_BIN_DIR"])
    if os.environ.get("SPIRE_CACHE_DIR"):
        return Path(os.environ["SPIRE_CACHE_DIR"])
    return Path.home() / ".cache" / "spiffe-broker" / f"spire-{SPIRE_VERSION}"


@dataclass(frozen=True)
class SpireBinaries:
    server: Path
    agent: Path

    @classmethod
    def find(cls) -> SpireBinaries | None:
        bin_dir = default_bin_dir()
        found = cls(bin_dir / "spire-server", bin_dir / "spire-agent")
        if all(p.is_file() and os.access(p, os.X_OK) for p in (found.server, found.agent)):
            return found
        return None


class SpireError(RuntimeError):
    """The SPIRE test deployment did not come up or a CLI call failed (message carries log tails)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class SpireDeployment:
    """Start with :meth:`start`, stop with :meth:`close`. Paths are short (mkdtemp under /tmp)."""

    def __init__(
        self, binaries: SpireBinaries, *, startup_timeout: float = 60.0, upstream_authority: bool = False
    ) -> None:
        self.binaries = binaries
        self.upstream_authority = upstream_authority
        self.startup_timeout = startup_timeout
        self.root = Path(tempfile.mkdtemp(prefix="spire.", dir="/tmp"))
        self.port = _free_port()
        self.server_socket = str(self.root / "api.sock")
        self.workload_socket = str(self.root / "wl" / "agent.sock")
        self.agent_admin_socket = str(self.root / "adm" / "admin.sock")
        self.bundle_path = self.root / "bundle.pem"
        for sub in ("server", "agent", "wl", "adm"):
            (self.root / sub).mkdir()
        self._server: subprocess.Popen[bytes] | None = None
        self._agent: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []

    @property
    def workload_api_address(self) -> str:
        """The value for ``SPIFFE_ENDPOINT_SOCKET`` (the Workload API address, with its scheme)."""
        return f"unix://{self.workload_socket}"

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._write_configs()
        self._server = self._spawn("server", [str(self.binaries.server), "run", "-config", "server.conf"])
        self._wait("spire-server healthcheck", self._healthy_server)
        self.bundle_path.write_text(self.server_cli("bundle", "show"))
        token = self._generate_join_token()
        self._start_agent(["-joinToken", token])

    def start_agent(self) -> None:
        """Restart the agent from its data dir (it resumes with its saved SVID; no new join token)."""
        self._start_agent([])

    @property
    def agent_running(self) -> bool:
        """Whether this deployment's agent process is running (for fixtures that must leave it running)."""
        return self._agent is not None and self._agent.poll() is None

    def stop_agent(self) -> None:
        self._stop(self._agent)
        self._agent = None

    def close(self) -> None:
        self._stop(self._agent)
        self._stop(self._server)
        self._agent = self._server = None
        for log in self._logs:
            log.close()
        self._logs.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def _start_agent(self, extra: list[str]) -> None:
        if self._agent is not None:
            raise SpireError("agent is already running")
        argv = [str(self.binaries.agent), "run", "-config", "agent.conf", *extra]
        self._agent = self._spawn("agent", argv)
        self._wait("spire-agent healthcheck", self._healthy_agent)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - closed in close()
        self._logs.append(log)
        return subprocess.Popen(argv, cwd=self.root, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    @staticmethod
    def _stop(process: subprocess.Popen[bytes] | None) -> None:
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def _wait(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            for name, proc in (("server", self._server), ("agent", self._agent)):
                if proc is not None and proc.poll() is not None:
                    raise SpireError(f"spire-{name} exited ({proc.returncode}):\n{self.log_tail(name)}")
            if ready():
                return
            time.sleep(0.2)
        raise SpireError(
            f"{what} not ready after {self.startup_timeout}s:\n{self.log_tail('server')}\n{self.log_tail('agent')}"
        )

    def log_tail(self, name: str) -> str:
        return f"--- spire-{name} log ---\n{_tail(self.root / f'{name}.log')}"

    def _healthy_server(self) -> bool:
        return self._run(self.binaries.server, ["healthcheck", "-socketPath", self.server_socket]).returncode == 0

    def _healthy_agent(self) -> bool:
        return self._run(self.binaries.agent, ["healthcheck", "-socketPath", self.workload_socket]).returncode == 0

    def _run(self, binary: Path, args: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binary), *args], cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False
        )

    # -- configuration -------------------------------------------------------------------------------------

    def _write_configs(self) -> None:
        root = self.root
        (root / "server.conf").write_text(f"""\
server {{
  bind_address = "127.0.0.1"
  bind_port = "{self.port}"
  socket_path = "{self.server_socket}"
  trust_domain = "{TRUST_DOMAIN}"
  data_dir = "{root}/server"
  log_level = "INFO"
}}
plugins {{
  DataStore "sql" {{
    plugin_data {{
      database_type = "sqlite3"
      connection_string = "{root}/server/datastore.sqlite3"
    }}
  }}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
  KeyManager "memory" {{ plugin_data {{}} }}
{self._upstream_authority_config()}}}
""")
        (root / "agent.conf").write_text(f"""\
agent {{
  data_dir = "{root}/agent"
  log_level = "INFO"
  server_address = "127.0.0.1"
  server_port = "{self.port}"
  socket_path = "{self.workload_socket}"
  admin_socket_path = "{self.agent_admin_socket}"
  trust_bundle_path = "{self.bundle_path}"
  trust_domain = "{TRUST_DOMAIN}"
}}
plugins {{
  NodeAttestor "join_token" {{ plugin_data {{}} }}
  KeyManager "disk" {{ plugin_data {{ directory = "{root}/agent" }} }}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
""")

    def _upstream_authority_config(self) -> str:
        if not self.upstream_authority:
            return ""
        cert, key = write_upstream_root(self.root / "upstream", TRUST_DOMAIN)
        return f"""\
  UpstreamAuthority "disk" {{
    plugin_data {{
      cert_file_path = "{cert}"
      key_file_path = "{key}"
    }}
  }}
"""

    # -- server CLI ----------------------------------------------------------------------------------------

    def server_cli(self, *args: str) -> str:
        """Run ``spire-server <args> -socketPath <admin socket>``; return stdout, raise on failure."""
        result = self._run(self.binaries.server, [*args, "-socketPath", self.server_socket])
        if result.returncode != 0:
            raise SpireError(f"spire-server {args[0]} {args[1] if len(args) > 1 else ''} failed: {result.stderr}")
        return result.stdout

    def _generate_join_token(self) -> str:
        out = self.server_cli("token", "generate", "-spiffeID", AGENT_ID, "-ttl", "600", "-output", "json")
        token: str = json.loads(out)["value"]
        return token

    def create_entry(
        self,
        spiffe_id: str,
        selectors: list[str],
        x509_ttl: int = 3600,
        jwt_ttl: int = 300,
        include_jti: bool = False,
        *,
        parent_id: str = AGENT_ID,
        hint: str | None = None,
    ) -> str:
        """``spire-server entry create``; return the new entry's ID."""
        args = ["entry", "create", "-parentID", parent_id, "-spiffeID", spiffe_id]
        for selector in selectors:
            args += ["-selector", selector]
        args += ["-x509SVIDTTL", str(x509_ttl), "-jwtSVIDTTL", str(jwt_ttl), "-output", "json"]
        if include_jti:
            args.append("-jwtSVIDIncludeJTI")
        if hint is not None:
            args += ["-hint", hint]
        result = json.loads(self.server_cli(*args))["results"][0]
        if result["status"]["code"] != 0:
            raise SpireError(f"entry create {spiffe_id}: {result['status']}")
        entry_id: str = result["entry"]["id"]
        return entry_id

    def show_entry(self, entry_id: str) -> dict[str, object]:
        """``spire-server entry show -entryID``: the entry as JSON."""
        entries = json.loads(self.server_cli("entry", "show", "-entryID", entry_id, "-output", "json"))
        found: dict[str, object] = entries["entries"][0]
        return found

    def delete_entry(self, entry_id: str) -> None:
        self.server_cli("entry", "delete", "-entryID", entry_id)

    # -- agent ---------------------------------------------------------------------------------------------

    def fetched_spiffe_ids(self) -> set[str]:
        """SPIFFE IDs the agent hands this process now (``spire-agent api fetch x509``); empty if none."""
        result = self._run(
            self.binaries.agent,
            ["api", "fetch", "x509", "-socketPath", self.workload_socket, "-output", "json", "-timeout", "2s"],
        )
        if result.returncode != 0:
            return set()
        # The output holds private keys: read only the IDs, never log the document.
        return {svid["spiffe_id"] for svid in json.loads(result.stdout).get("svids", [])}

    def wait_for_entry(self, spiffe_id: str, *, timeout: float = 60.0) -> None:
        """Poll until the agent serves an X509-SVID for ``spiffe_id`` to this process (its uid's entries)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if spiffe_id in self.fetched_spiffe_ids():
                return
            time.sleep(0.5)
        raise SpireError(f"no X509-SVID for {spiffe_id} after {timeout}s:\n{self.log_tail('agent')}")
