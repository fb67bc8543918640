"""What the sidecar's resident memory is made of: RSS added by each group of imports, in a fresh interpreter.

``python -m bench.memory`` prints one JSON line: ``steps`` (module group -> KiB of ``VmRSS`` it adds, imported in
the order the sidecar needs them), ``total_kib`` after ``broker.cli.sidecar``, and
``total_without_spiffe_init_kib``: the same imports in another fresh interpreter where the ``spiffe`` package's
``__init__`` is skipped (py-spiffe's ``__init__`` imports its X509Source/JwtSource and with them PyJWT,
pyOpenSSL, pyasn1 and pem, none of which the sidecar uses: it needs only ``spiffe._proto``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

__all__ = ["main"]

STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("python + asyncio + ssl", ("asyncio", "ssl", "json")),
    ("cryptography", ("cryptography.x509", "cryptography.hazmat.primitives.asymmetric.ec")),
    ("aiohttp (client + web)", ("aiohttp", "aiohttp.web")),
    ("pydantic + pydantic-settings", ("pydantic", "pydantic_settings")),
    ("click + PyYAML", ("click", "yaml")),
    ("grpcio + protobuf", ("grpc", "google.protobuf")),
    ("spiffe package (for spiffe._proto)", ("spiffe._proto.workload_pb2", "spiffe._proto.workload_pb2_grpc")),
    ("broker (cli.main + cli.sidecar)", ("broker.cli.main", "broker.cli.sidecar")),
)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _steps() -> dict[str, object]:
    found: dict[str, int] = {"interpreter": _rss_kib()}
    previous = found["interpreter"]
    for name, modules in STEPS:
        for module in modules:
            importlib.import_module(module)
        current = _rss_kib()
        found[name] = current - previous
        previous = current
    return {"steps_kib": found, "total_kib": previous}


def _without_spiffe_init() -> int:
    spec = importlib.util.find_spec("spiffe")
    assert spec is not None and spec.submodule_search_locations is not None
    package = types.ModuleType("spiffe")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["spiffe"] = package
    for _, modules in STEPS:
        for module in modules:
            importlib.import_module(module)
    return _rss_kib()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--without-spiffe-init", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.without_spiffe_init:
        print(json.dumps({"total_kib": _without_spiffe_init()}))
        return
    result = _steps()
    other = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--without-spiffe-init"], capture_output=True, check=True
    )
    result["total_without_spiffe_init_kib"] = json.loads(other.stdout)["total_kib"]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
