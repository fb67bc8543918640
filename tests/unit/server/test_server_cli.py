"""Tests for ``spiffe-broker server`` (broker.cli.server)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509

from broker._sealing import generate_kek_file
from broker.cli.server import parse_listen, server
from broker.devtools.devca import DevCA
from broker.errors import ConfigError
from broker.identity.spiffeid import SpiffeId
from broker.identity.x509svid import spiffe_id_from_certificate
from tests.unit.server.token_service_helpers import POLICY


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:8443", ("127.0.0.1", 8443)), ("[::1]:0", ("::1", 0)), ("broker.local:1", ("broker.local", 1))],
    ids=["ipv4", "ipv6", "name"],
)
def test_parse_listen_accepts_host_port(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize(
    "value",
    ["8443", "host:", "host:99999", "::1:80", "host:80\n"],
    ids=["no-host", "no-port", "port-range", "bare-ipv6", "newline"],
)
def test_parse_listen_refuses_malformed(value: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cert", "c.pem"], "--cert and --key go together"),
        (["--cert", "c.pem", "--key", "k.pem", "--workload-api", "unix:///x"], "either --workload-api"),
        (["--listen", "nope"], "is not HOST:PORT"),
    ],
    ids=["cert-without-key", "both-identities", "bad-listen"],
)
def test_server_command_refuses_bad_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(server, ["--policy", "p.yaml", *args])
    assert result.exit_code == 1 and message in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_server_command_serves_with_file_identity_and_stops_on_sigterm(tmp_path: Path) -> None:
    ca = DevCA.ephemeral("example.org")
    svid = ca.issue_x509_svid(SpiffeId.parse("spiffe://example.org/broker"), ttl=600)
    (tmp_path / "cert.pem").write_bytes(svid.chain_pem())
    (tmp_path / "key.pem").write_bytes(svid.key_pem())
    (tmp_path / "bundle.pem").write_bytes(ca.x509_bundle().to_pem())
    (tmp_path / "jwks.json").write_bytes(ca.jwks())
    (tmp_path / "policy.yaml").write_text(POLICY)
    port, health = _free_port(), _free_port()
    args = [
        "server",
        "--listen",
        f"127.0.0.1:{port}",
        "--state-dir",
        str(tmp_path / "state"),
        "--policy",
        str(tmp_path / "policy.yaml"),
        "--cert",
        str(tmp_path / "cert.pem"),
        "--key",
        str(tmp_path / "key.pem"),
        "--bundle",
        str(tmp_path / "bundle.pem"),
        "--jwt-bundle",
        f"example.org={tmp_path / 'jwks.json'}",
        "--health-port",
        str(health),
        "--kek-file",
        str(_kek(tmp_path)),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")}
    code = "from broker.cli.main import main; main()"
    with subprocess.Popen([sys.executable, "-c", code, *args], env=env, stderr=subprocess.PIPE, text=True) as proc:
        try:
            body = _poll_ready(f"http://127.0.0.1:{health}/readyz", proc)
            assert body == {"status": "ready"}
            assert (tmp_path / "state" / "broker.db").stat().st_mode & 0o777 == 0o600  # the embedded store
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert "token service listening" in stderr and "PRIVATE KEY" not in stderr


def _poll_ready(url: str, proc: subprocess.Popen[Any]) -> object:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited early"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return json.loads(resp.read())
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not become ready")


def test_server_command_gets_identity_from_the_workload_api(tmp_path: Path) -> None:
    """``spiffe-broker server --workload-api`` against the dev Workload API: serves TLS with the broker's SVID."""
    directory = Path(tempfile.mkdtemp(dir="/tmp", prefix="wl-"))  # short: a Unix socket path lives here
    socket_path = directory / "agent.sock"
    (tmp_path / "policy.yaml").write_text(POLICY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")}
    code = "from broker.cli.main import main; main()"
    agent_args = [
        "workload-api", "--socket", str(socket_path), "--state-dir", str(directory / "state"),
        "--trust-domain", "example.org", "--register-uid", str(os.getuid()), "--spiffe-id", "spiffe://example.org/broker",
    ]  # fmt: skip
    port, health = _free_port(), _free_port()
    server_args = [
        "server", "--listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "state"),
        "--policy", str(tmp_path / "policy.yaml"), "--health-port", str(health),
        "--workload-api", f"unix://{socket_path}", "--kek-file", str(_kek(tmp_path)),
    ]  # fmt: skip
    with subprocess.Popen([sys.executable, "-c", code, *agent_args], env=env, stderr=subprocess.DEVNULL) as agent:
        try:
            _wait_for(socket_path.exists, agent)
            with subprocess.Popen([sys.executable, "-c", code, *server_args], env=env, stderr=subprocess.PIPE,
                                  text=True) as proc:  # fmt: skip
                try:
                    assert _poll_ready(f"http://127.0.0.1:{health}/readyz", proc) == {"status": "ready"}
                    leaf = x509.load_pem_x509_certificate(ssl.get_server_certificate(("127.0.0.1", port)).encode())
                    assert spiffe_id_from_certificate(leaf) == SpiffeId.parse("spiffe://example.org/broker")
                finally:
                    proc.send_signal(signal.SIGTERM)
                    _, stderr = proc.communicate(timeout=10)
                assert proc.returncode == 0, stderr
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=10)
            shutil.rmtree(directory, ignore_errors=True)


def _wait_for(check: Callable[[], bool], proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert proc.poll() is None and time.monotonic() < deadline, "process did not come up"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_server_command_stops_at_once_on_a_signal_while_waiting_for_its_svid(tmp_path: Path, sig: int) -> None:
    """Before: Ctrl-C was ignored for ~28 s (until the SVID wait timed out) when SIGINT came in ignored (a
    background job, PID 1 in a container), and SIGTERM killed the process without cleanup. The child starts with
    SIGINT ignored, as those do."""
    directory = Path(tempfile.mkdtemp(dir="/tmp", prefix="sig-"))
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a Workload API that accepts and never answers
    agent.bind(str(directory / "agent.sock"))
    agent.listen()
    agent.settimeout(20)
    (tmp_path / "policy.yaml").write_text(POLICY)
    args = [
        "server", "--listen", f"127.0.0.1:{_free_port()}", "--state-dir", str(tmp_path / "state"),
        "--policy", str(tmp_path / "policy.yaml"), "--workload-api", f"unix://{directory / 'agent.sock'}",
        "--kek-file", str(_kek(tmp_path)),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")}
    code = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); from broker.cli.main import main; main()"
    try:
        with subprocess.Popen([sys.executable, "-c", code, *args], env=env, stderr=subprocess.PIPE, text=True) as proc:
            connection, _ = agent.accept()  # the server is now waiting for its first SVID
            sent = time.monotonic()
            proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=10)
            elapsed = time.monotonic() - sent
            connection.close()
    finally:
        agent.close()
        shutil.rmtree(directory, ignore_errors=True)
    assert proc.returncode == 0, stderr
    assert elapsed < 3.0, f"took {elapsed:.1f}s to stop"
    assert "stopped before the first SVID arrived" in stderr and "Traceback" not in stderr


def _kek(directory: Path) -> Path:
    """A fresh key-encryption key file (the server refuses to start without one)."""
    path = directory / "kek"
    if not path.exists():
        generate_kek_file(path)
    return path
