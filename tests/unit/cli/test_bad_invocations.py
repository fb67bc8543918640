"""Every bad invocation found, run as a real process: one ``Error:`` line saying what is wrong and what to do,
a non-zero exit, and no traceback (issue 7, defect 5).

Placeholders in a row's arguments and environment: ``{dir}`` a private short directory, ``{file}`` a regular
file in it, ``{busy}`` a TCP port something listens on, ``{wl}`` a running Workload API socket (gRPC, this uid
registered), ``{workloads}`` a valid registration file, ``{policy}`` an empty policy file.
"""

from __future__ import annotations

import re
import shlex
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.unit.cli.cli_helpers import run_cli, running_workload_api, short_dir

LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")  # broker.cli.main.LOG_FORMAT
CLICK_USAGE = ("Usage: ", "Try 'spiffe-broker", "  ")  # click's usage block before a usage error
UNWRITABLE = r"choose a path this user can write|read-only"  # /sys: EPERM as root, EACCES otherwise, or EROFS
UNDER_A_FILE = r"Not a directory|File exists"  # pathlib's mkdir(parents=True) reports either
UNDER_A_FILE_TODO = r"a part of the path is a file|a file is at that path"
HELP = r"Try 'spiffe-broker[a-z -]* (-h|--help)' for help"


@dataclass(frozen=True)
class Bad:
    args: tuple[str, ...]
    wrong: str  # regex the Error line must match: what is wrong
    todo: str  # regex stderr must match: what to do
    env: dict[str, str] = field(default_factory=dict)
    absent: str | None = None  # text that must not appear (a mangled value)


A_KEK = {"SPIFFE_BROKER_KEK": "A" * 43}  # a well-formed key-encryption key (32 zero bytes, base64url)


def case(case_id: str, command: str, *, wrong: str, todo: str, xfail: str = "", **more: Any) -> object:
    """One row: ``command`` is split like a shell line (after the placeholders are filled in)."""
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(Bad(tuple(shlex.split(command)), wrong, todo, **more), id=case_id, marks=marks)


TOKEN = "token --audience a"
WL = "workload-api --trust-domain example.org --state-dir {dir}/wl"
DEV = "dev --state-dir {dir}/state --server-port 0 --demo-port 0"
SIDECAR = "sidecar --token-service https://127.0.0.1:1"

CASES = [
    # the global options
    case("log-level-flag", f"--log-level LOUD {TOKEN}", wrong="'LOUD' is not a log level", todo="use one of DEBUG"),
    case("log-level-env", TOKEN, env={"SPIFFE_BROKER_LOG_LEVEL": "loud"}, wrong="SPIFFE_BROKER_LOG_LEVEL",
         todo="use one of DEBUG"),
    case("log-level-for-no-level", f"--log-level-for hpack {TOKEN}", wrong="not LOGGER=LEVEL", todo="aiohttp=DEBUG"),
    case("log-levels-env", TOKEN, env={"SPIFFE_BROKER_LOG_LEVELS": "hpack=LOUD"}, wrong="SPIFFE_BROKER_LOG_LEVELS",
         todo="use one of"),
    case("unknown-command", "tokn", wrong="No such command 'tokn'", todo=HELP),
    case("unknown-option", "token --audeince a", wrong="No such option", todo="Did you mean '--audience'"),
    # dev
    case("dev-busy-port", "dev --state-dir {dir}/state --server-port {busy} --demo-port 0",
         wrong="address already in use", todo="stop it or choose another port"),
    case("dev-state-dir-unwritable", "dev --state-dir /sys/spiffe-broker-test/state", wrong="/sys/spiffe-broker-test",
         todo=UNWRITABLE),
    case("dev-state-dir-under-a-file", "dev --state-dir {file}/state", wrong=UNDER_A_FILE, todo=UNDER_A_FILE_TODO),
    case("dev-state-dir-missing-root", "dev --state-dir /proc/nonexistent/state", wrong="No such file",
         todo="check the path"),
    case("dev-policy-unwritable", f"{DEV} --policy {{file}}/policy.yaml", wrong=UNDER_A_FILE, todo=UNDER_A_FILE_TODO),
    case("dev-sidecar-socket-unwritable", f"{DEV} --sidecar-socket {{file}}/token.sock", wrong=UNDER_A_FILE,
         todo=UNDER_A_FILE_TODO),
    case("dev-bad-trust-domain", f"{DEV} --trust-domain 'Not A Domain'", wrong="trust domain",
         todo="lowercase|characters|must"),
    case("dev-config-missing", "dev --config {dir}/nope.toml", wrong="config file not found", todo="--config"),
    case("dev-config-not-toml", "dev --config {file}", wrong="not valid TOML", todo="fix the file"),
    case("dev-env-invalid", "dev", env={"SPIFFE_BROKER_SERVER__PORT": "http"}, wrong="SPIFFE_BROKER_SERVER__PORT",
         todo="fix or unset it"),
    # workload-api
    case("workload-api-entries-missing", f"{WL} --socket {{dir}}/a.sock --entries {{dir}}/nope.yaml",
         wrong="nope.yaml: no such file", todo="create it"),
    case("workload-api-entries-invalid", f"{WL} --socket {{dir}}/a.sock --entries {{workloads}}",
         wrong="unknown keys|must be", todo="expected|must be"),
    case("workload-api-state-dir-unwritable",
         "workload-api --trust-domain example.org --socket {dir}/a.sock --state-dir /sys/spiffe-broker-test",
         wrong="/sys/spiffe-broker-test", todo=UNWRITABLE),
    case("workload-api-socket-unwritable", f"{WL} --socket {{file}}/a.sock", wrong=UNDER_A_FILE,
         todo=UNDER_A_FILE_TODO),
    case("workload-api-socket-in-use", f"{WL} --socket {{wl}}", wrong="in use", todo="stop it|another"),
    case("workload-api-bad-trust-domain", "workload-api --socket {dir}/a.sock --state-dir {dir}/w --trust-domain 'B D'",
         wrong="--trust-domain", todo="lowercase|characters|must"),
    case("workload-api-uid-without-id", f"{WL} --socket {{dir}}/a.sock --register-uid 1", wrong="go together",
         todo=HELP),
    # server
    case("server-no-policy", "server", wrong="no policy file", todo="pass --policy"),
    case("server-bad-listen", "server --policy {policy} --listen nowhere", wrong="not HOST:PORT", todo="HOST:PORT"),
    case("server-cert-without-key", "server --policy {policy} --cert {file}", wrong="go together", todo="--key"),
    case("server-no-kek", "server --policy {policy} --state-dir {dir}/s --workload-api unix://{wl} "
         "--listen 127.0.0.1:0", wrong="no key-encryption key", todo="keys init-kek"),
    case("server-busy-port", "server --policy {policy} --state-dir {dir}/s --workload-api unix://{wl} "
         "--listen 127.0.0.1:{busy}", env=A_KEK, wrong="address already in use", todo="stop it or choose another port"),
    case("server-state-dir-unwritable", "server --policy {policy} --state-dir {file}/s --workload-api unix://{wl} "
         "--listen 127.0.0.1:0", env=A_KEK, wrong=UNDER_A_FILE, todo=UNDER_A_FILE_TODO),
    # sidecar
    case("sidecar-no-socket", SIDECAR, wrong="pass --socket", todo="pass --socket"),
    case("sidecar-no-token-service", "sidecar --socket {dir}/s.sock", wrong="pass --token-service",
         todo="pass --token-service"),
    case("sidecar-bad-socket-mode", "sidecar --socket {dir}/s.sock --socket-mode 0400", wrong="socket mode",
         todo="including owner"),
    case("sidecar-no-workload-api", f"{SIDECAR} --socket {{dir}}/s.sock", wrong="no Workload API address",
         todo="SPIFFE_ENDPOINT_SOCKET"),
    case("sidecar-socket-unwritable", f"{SIDECAR} --socket {{file}}/s.sock --workload-api unix://{{wl}}",
         wrong=UNDER_A_FILE, todo=UNDER_A_FILE_TODO),
    # demo-api
    case("demo-api-no-issuer", "demo-api --audience a", wrong="pass --issuer", todo="pass --issuer"),
    case("demo-api-no-audience", "demo-api --issuer https://127.0.0.1:1", wrong="pass --audience",
         todo="pass --audience"),
    case("demo-api-bad-listen", "demo-api --listen nowhere", wrong="not HOST:PORT", todo="HOST:PORT"),
    case("demo-api-busy-port", "demo-api --audience a --issuer https://127.0.0.1:1 --workload-api unix://{wl} "
         "--listen 127.0.0.1:{busy}", wrong="address already in use", todo="stop it or choose another port"),
    # token and call
    case("token-no-socket", TOKEN, wrong="pass --socket", todo="pass --socket"),
    case("token-no-sidecar", f"{TOKEN} --socket {{dir}}/none.sock", wrong="cannot reach the sidecar",
         todo="is it running"),
    case("token-workload-api-socket", f"{TOKEN} --socket {{wl}}", wrong="not a spiffe-broker sidecar socket",
         todo="looks like a gRPC/Workload API socket"),
    case("token-relative-unix-url", f"{TOKEN} --socket unix://relative.sock", wrong="is not a Unix socket",
         todo="unix:///absolute/path"),
    case("token-config-missing", f"{TOKEN} --config {{dir}}/nope.toml", wrong="config file not found",
         todo="--config"),
    case("token-env-unknown-key", TOKEN, env={"SPIFFE_BROKER_SIDECAR__SOKCET": "/x"},
         wrong="SPIFFE_BROKER_SIDECAR__SOKCET", todo="fix or unset it"),
    case("call-plain-http", "call http://127.0.0.1:1/ --audience a --socket {dir}/s.sock", wrong="must be https://",
         todo="https://"),
    case("call-no-sidecar", "call https://127.0.0.1:1/ --audience a --socket {dir}/none.sock",
         wrong="cannot reach the sidecar", todo="is it running"),
    # entries
    case("entries-file-missing", "entries plan {dir}/nope.yaml", wrong="does not exist", todo=HELP),
    case("entries-export-unwritable", "entries export {workloads} --policy {file}/policy.yaml", wrong=UNDER_A_FILE,
         todo=UNDER_A_FILE_TODO),
    case("entries-server-socket-url", "entries plan {workloads} --server-socket unix://{dir}/none.sock",
         wrong="none.sock", todo="running|start|check", absent="unix:unix:"),
    case("entries-no-server", "entries plan {workloads} --server-socket {dir}/none.sock", wrong="none.sock",
         todo="running|start|check"),
]  # fmt: skip


@pytest.fixture(scope="module")
def places() -> Iterator[dict[str, str]]:
    with short_dir() as directory, socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        (directory / "file").write_text("not a directory\n")
        (directory / "policy.yaml").write_text("rules: []\n")
        examples = Path(__file__).parents[3] / "examples" / "workloads.yaml"
        with running_workload_api(directory) as api:
            yield {
                "dir": str(directory / "run"),
                "file": str(directory / "file"),
                "busy": str(busy.getsockname()[1]),
                "wl": str(api.socket),
                "workloads": str(examples),
                "policy": str(directory / "policy.yaml"),
            }


@pytest.fixture
def dirs(places: dict[str, str]) -> Iterator[dict[str, str]]:
    """A fresh ``{dir}`` per case, so no case sees another's state."""
    Path(places["dir"]).mkdir()
    try:
        yield places
    finally:
        shutil.rmtree(places["dir"], ignore_errors=True)


def _unexpected_lines(stderr: str) -> list[str]:
    """Lines that are neither a log line, click's usage block, nor the one Error line."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip()
        and not LOG_LINE.match(line)
        and not line.startswith(CLICK_USAGE)
        and not line.startswith("Error: ")
    ]


@pytest.mark.parametrize("bad", CASES)
def test_bad_invocation_is_one_clear_line_and_a_failure(bad: Bad, dirs: dict[str, str]) -> None:
    args = [arg.format(**dirs) for arg in bad.args]
    result = run_cli(args, env={k: v.format(**dirs) for k, v in bad.env.items()})
    output = result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert "Traceback" not in output, output
    assert result.returncode != 0, output
    assert len(errors) == 1, output
    assert re.search(bad.wrong.format(**dirs), errors[0], re.IGNORECASE), errors[0]
    assert re.search(bad.todo, result.stderr, re.IGNORECASE), result.stderr
    assert _unexpected_lines(result.stderr) == [], result.stderr
    assert bad.absent is None or bad.absent not in output, output
