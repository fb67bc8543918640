"""What ``spiffe-broker sidecar`` loads: none of the modules it does not need (issue 14, sidecar RSS).

A fresh interpreter runs the CLI as the console script does (``broker.cli.main:main``) with ``sidecar --help``,
which imports ``broker.cli.sidecar`` through the lazy group and everything it imports, then lists ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# Module (and its submodules) -> why the sidecar must not load it.
OFF_THE_PATH = {
    "grpclib": "the dev Workload API's gRPC server library (the sidecar's client is grpcio)",
    "h2": "HTTP/2 for grpclib",
    "hpack": "HTTP/2 headers for grpclib",
    "jwt": "PyJWT, pulled in by py-spiffe's package __init__",
    "OpenSSL": "pyOpenSSL, pulled in by py-spiffe's package __init__",
    "pyasn1": "pulled in by py-spiffe's package __init__",
    "pem": "pulled in by py-spiffe's package __init__",
    "spiffe.workloadapi": "py-spiffe's client: the sidecar needs only the generated workload_pb2",
    "spiffe.svid": "py-spiffe's SVID types",
    "pydantic_settings": "settings are loaded by broker.config itself",
    "pydantic": "settings are validated by broker.config itself",
    "prometheus_client": "imported only when the sidecar's metrics are served ([metrics] port, socket, on_app_socket)",
    "broker.sidecar.egress.proxy": "the egress proxy is imported only when [egress] names a listener",
    "broker.apikeys": "API-key exceptions: only the egress proxy needs them",
}

PROBE = """
import json, sys
from broker.cli.main import main
try:
    main(["sidecar", "--help"])
except SystemExit as exc:
    assert exc.code == 0, exc.code
print(json.dumps(sorted(sys.modules)))
"""


def _loaded_by_sidecar_help() -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=ROOT, timeout=120
    )
    return list(json.loads(result.stdout.splitlines()[-1]))


@pytest.fixture(scope="module")
def loaded() -> list[str]:
    return _loaded_by_sidecar_help()


def test_the_sidecar_command_is_loaded(loaded: list[str]) -> None:
    assert "broker.cli.sidecar" in loaded
    assert "grpc" in loaded  # the Workload API client stays on grpcio


@pytest.mark.parametrize("module", sorted(OFF_THE_PATH), ids=sorted(OFF_THE_PATH))
def test_the_sidecar_does_not_load(loaded: list[str], module: str) -> None:
    found = [name for name in loaded if name == module or name.startswith(module + ".")]
    assert not found, f"{module} ({OFF_THE_PATH[module]}) is on the sidecar's import path: {found[:5]}"
