"""What the sidecar's resident memory is made of: RSS added by each group of the modules it really imports.

``python -m bench.memory`` prints one JSON line:

* ``sidecar_path``: a fresh interpreter runs ``spiffe-broker sidecar --help`` the way the console script does
  (``broker.cli.main:main``; the lazy group imports ``broker.cli.sidecar`` and everything it imports): its
  ``VmRSS`` (``rss_kib``), how many modules it loaded, and which of the modules the sidecar must not load
  (``OFF_THE_PATH``, as ``tests/unit/cli/test_sidecar_imports.py`` checks) it loaded anyway;
* ``steps_kib``: another fresh interpreter imports exactly those modules again, group by group (``GROUPS``, in
  dependency order: a group's own dependencies sit in it or above it), and reports the ``VmRSS`` each group adds;
  ``total_kib`` is the RSS at the end. The first step, ``interpreter``, is a bare ``python -c``.

Import-time RSS is the floor of the running sidecar's: ``python -m bench --only d`` measures the process itself
after start-up and after 10,000 requests (docs/benchmarks.md (d)).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

__all__ = ["GROUPS", "OFF_THE_PATH", "main"]

ROOT = Path(__file__).resolve().parent.parent

# (group, top-level module names); "stdlib" is every module of Python's standard library; broker's own modules
# come last, split by package; anything else lands in "other".
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("python stdlib (asyncio, ssl, json, logging, ...)", ("<stdlib>",)),
    ("cryptography (+ cffi)", ("cryptography", "_cffi_backend", "cffi")),
    ("joserfc", ("joserfc",)),
    ("aiohttp (+ yarl, multidict, propcache, frozenlist, aiosignal, attrs, aiohappyeyeballs, idna)",
     ("aiohttp", "yarl", "multidict", "propcache", "frozenlist", "aiosignal", "attr", "attrs", "aiohappyeyeballs",
      "idna", "typing_extensions")),
    ("click", ("click",)),
    ("PyYAML", ("yaml", "_yaml")),
    ("protobuf", ("google",)),
    ("grpcio", ("grpc", "grpc_tools")),
    ("prometheus_client", ("prometheus_client",)),
    ("opentelemetry (only where the [otel] extra is installed)", ("opentelemetry", "importlib_metadata", "zipp")),
    ("pydantic + pydantic-settings", ("pydantic", "pydantic_core", "pydantic_settings", "annotated_types",
                                      "typing_inspection", "dotenv")),
    ("py-spiffe client (PyJWT, pyOpenSSL, pyasn1, pem)", ("jwt", "OpenSSL", "pyasn1", "pyasn1_modules", "pem")),
    ("grpclib + h2 + hpack", ("grpclib", "h2", "hpack", "hyperframe")),
    ("broker.config", ("broker.config", "broker.errors")),
    ("Workload API messages (py-spiffe's workload_pb2)", ("spiffe",)),
    ("broker.identity + jose + oauth", ("broker.identity", "broker.jose", "broker.oauth", "broker._")),
    ("broker.web + verify + events + apikeys", ("broker.web", "broker.verify", "broker.events", "broker.apikeys",
                                                "broker.metrics", "broker.tracing")),
    ("broker.sidecar", ("broker.sidecar",)),
    ("broker.cli", ("broker.cli", "broker")),
)  # fmt: skip

OFF_THE_PATH = ("grpclib", "h2", "hpack", "jwt", "OpenSSL", "pyasn1", "pem", "spiffe.workloadapi", "spiffe.svid",
                "pydantic_settings", "pydantic", "prometheus_client")  # fmt: skip

_RSS = "int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS:')).split()[1])"

_SIDECAR_PATH = f"""
import json, sys
from broker.cli.main import main
try:
    main(["sidecar", "--help"])
except SystemExit:
    pass
print(json.dumps({{"rss_kib": {_RSS}, "modules": list(sys.modules)}}))
"""

# Imports the named modules in order (a module a previous one already loaded costs nothing again); the Workload
# API messages are loaded the way broker.identity.workloadapi.pb loads them, never through py-spiffe's __init__.
_STEPS = f"""
import importlib, json, sys
plan = json.loads(sys.argv[1])
found = {{"interpreter": {_RSS}}}
previous = found["interpreter"]
for name, modules in plan:
    for module in modules:
        if module in sys.modules or module.startswith("spiffe"):
            continue
        try:
            importlib.import_module(module)
        except Exception:  # e.g. a module another one registered under a name that cannot be imported directly
            pass
    current = {_RSS}
    found[name] = current - previous
    previous = current
print(json.dumps({{"steps_kib": found, "total_kib": previous}}))
"""


def _group_of(module: str) -> str:
    top = module.split(".")[0]
    for name, prefixes in GROUPS:
        for prefix in prefixes:
            if prefix == "<stdlib>" and (top in sys.stdlib_module_names or top.startswith("_cython")):
                return name
            if module == prefix or module.startswith(prefix + "." if not prefix.endswith("_") else prefix):
                return name
    return "other"


def _run(code: str, *args: str) -> dict[str, object]:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=ROOT)
    found: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return found


def measure() -> dict[str, object]:
    path = _run(_SIDECAR_PATH)
    modules = [str(name) for name in path["modules"]]  # type: ignore[attr-defined]
    order = [name for name, _ in GROUPS] + ["other"]
    plan: dict[str, list[str]] = {name: [] for name in order}
    for module in modules:
        plan[_group_of(module)].append(module)
    plan["Workload API messages (py-spiffe's workload_pb2)"] = ["broker.identity.workloadapi.pb"]  # loads it by file
    steps = _run(_STEPS, json.dumps([[name, plan[name]] for name in order if plan[name]]))
    loaded = [name for name in OFF_THE_PATH if any(m == name or m.startswith(name + ".") for m in modules)]
    return {
        "sidecar_path": {"rss_kib": path["rss_kib"], "modules": len(modules), "loaded_but_unneeded": loaded},
        **steps,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    print(json.dumps(measure()), flush=True)


if __name__ == "__main__":
    main()
