"""(j) The sidecar's egress proxy (issue 12): requests/s and added latency against the app calling the target itself.

Three servers, each its own process, and a load generator (``bench.loadgen``, raw client) per run:

* the **target** (``bench.egress_servers target``): a bare aiohttp HTTPS server, TLS 1.3, an ECDSA P-256 certificate
  for ``api.bench.example`` (and ``close.bench.example``) under a throwaway CA made here, keep-alive;
* the **egress proxy** as shipped (``bench.egress_proxy``: ``build_proxy`` + ``start_egress``) on a loopback port,
  trusting only that CA, its catalog and grants answered from memory;
* the **bare forwarder** (``bench.egress_servers bare``): the reference, a plain aiohttp server + client pass-through.

Layout on 2 CPUs: the target alone on the first (it stands for a third-party API on another machine); the proxy, the
bare forwarder and the generator on the second (the sidecar runs in the app's pod, next to the app).

Sides, alternated in every round (direct first), each the same requests:

* ``direct``: the generator calls ``https://127.0.0.1:<target>/v1/...`` itself: TLS from the client, keep-alive;
* ``forward``: plain HTTP to the proxy in absolute form (``GET http://api.bench.example:<target>/v1/... HTTP/1.1``,
  what an ``HTTP_PROXY`` client sends); the proxy injects the key and opens TLS to the target;
* ``route``: the local route ``GET /bench-api/v1/...`` on the same loopback port;
* ``bare``: as ``forward``, to the bare forwarder: the same client and streaming, none of the proxy's checks: what
  any aiohttp-based forwarder costs;
* ``forward_new_tls`` (1 KiB GET only): as ``forward``, to ``close.bench.example`` (the same target under a name of
  its own, so its own connection pool in the proxy) ``/v1/small-close``, whose response closes the target's
  connection: the proxy needs a new TCP + TLS connection upstream for every request. What upstream connection reuse
  saves (the app's own connection to the proxy stays alive: ``Connection`` is hop-by-hop).

Workloads: ``GET /v1/small`` (1 KiB JSON back) and ``POST /v1/upload`` with a 1 MiB body (a small JSON back), each at
concurrency 1 (latency: p50/p99) and 16 (throughput). Every run also records the CPU time per request (user +
system, and system alone; ``/proc/<pid>/stat``, warm-up included, as :func:`bench.procs.run_json` does) of the target
and of the forwarder serving the side, and how many TCP connections the target accepted (its ``/_stats``): that is
how upstream reuse is checked, not assumed. Also: ``VmRSS`` and ``VmHWM`` of both forwarders after start-up and after
each workload, and how many grants the proxy asked for (from its log, at its exit).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import re
import shutil
import ssl
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bench.egress_servers import CLOSE_HOST, EXCEPTION, TARGET_HOST
from bench.procs import Child, cpu_count, free_port, pin, port_open, run_json, spawn, wait_until
from broker._files import write_private_file

__all__ = ["EgressRun", "egress_rows", "run_egress_bench"]

UPLOAD_BYTES = 1024 * 1024
CONCURRENCIES = (1, 16)
START_TIMEOUT = 30.0
_GRANTS = re.compile(r"grants asked of the token service: (\d+)")


@dataclass(frozen=True)
class Workload:
    name: str
    path: str
    method: str = "GET"
    sides: tuple[str, ...] = ("direct", "forward", "route", "bare")


WORKLOADS = (
    Workload("get_1k", "/v1/small", sides=("direct", "forward", "route", "bare", "forward_new_tls")),
    Workload("post_1m", "/v1/upload", method="POST"),
)
FORWARDER = {"forward": "proxy", "route": "proxy", "forward_new_tls": "proxy", "bare": "bare"}  # who serves a side


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _certificates(root: Path) -> None:
    """A throwaway CA (``ca.pem``) and the target's ECDSA P-256 certificate for both its names and 127.0.0.1."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("bench egress CA")).issuer_name(_name("bench egress CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    names = [x509.DNSName(TARGET_HOST), x509.DNSName(CLOSE_HOST), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    leaf = (
        x509.CertificateBuilder().subject_name(_name(TARGET_HOST)).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    write_private_file(root / "ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    write_private_file(root / "target.pem", leaf.public_bytes(serialization.Encoding.PEM))
    write_private_file(root / "target.key", key.private_bytes(serialization.Encoding.PEM,
                       serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip


def _layout() -> tuple[set[int] | None, set[int] | None]:
    """(the target's CPUs, the forwarders' and the generator's CPUs): one core each when there are at least two."""
    cpus = sorted(os.sched_getaffinity(0))
    if cpu_count() < 2:
        return None, None
    return {cpus[0]}, {cpus[1]}


@dataclass
class EgressRun:
    """The run directory and the three servers; a context manager (stops them, removes the directory)."""

    root: Path
    keep: bool = False
    target_port: int = field(default_factory=free_port)
    proxy_port: int = field(default_factory=free_port)
    bare_port: int = field(default_factory=free_port)
    children: dict[str, Child] = field(default_factory=dict)

    @classmethod
    def create(cls, *, keep: bool = False) -> EgressRun:
        root = Path(tempfile.mkdtemp(prefix="sbe-", dir="/tmp"))
        (root / "logs").mkdir()
        _certificates(root)
        (root / "upload.bin").write_bytes(b"u" * UPLOAD_BYTES)
        return cls(root, keep)

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    def start(self, target_cpus: set[int] | None, proxy_cpus: set[int] | None) -> None:
        module = [sys.executable, "-m", "bench.egress_servers"]
        files = ["--cert", str(self.root / "target.pem"), "--key", str(self.root / "target.key")]
        target = self._spawn("target", [*module, "target", "--port", str(self.target_port), *files])
        pin(target.pid, target_cpus)
        wait_until(lambda: port_open(self.target_port), timeout=START_TIMEOUT, what="the target", child=target)
        proxy = self._spawn("proxy", [sys.executable, "-m", "bench.egress_proxy", "--port", str(self.proxy_port),
                                      "--target-port", str(self.target_port), "--ca", str(self.ca)])  # fmt: skip
        pin(proxy.pid, proxy_cpus)
        wait_until(lambda: port_open(self.proxy_port), timeout=START_TIMEOUT, what="the egress proxy", child=proxy)
        bare = self._spawn("bare", [*module, "bare", "--port", str(self.bare_port), "--ca", str(self.ca)])
        pin(bare.pid, proxy_cpus)
        wait_until(lambda: port_open(self.bare_port), timeout=START_TIMEOUT, what="the bare forwarder", child=bare)

    def _spawn(self, name: str, argv: list[str]) -> Child:
        child = spawn(name, argv, log_dir=self.root / "logs", env={"PYTHONUNBUFFERED": "1"})
        self.children[name] = child
        return child

    def client_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        return context

    def connections(self) -> int:
        """TCP connections the target has accepted so far, the one that asks included."""
        connection = http.client.HTTPSConnection("127.0.0.1", self.target_port, context=self.client_tls(), timeout=5)
        try:
            connection.request("GET", "/_stats")
            return int(json.loads(connection.getresponse().read())["connections"])
        finally:
            connection.close()

    def grants_asked(self) -> int | None:
        found = _GRANTS.findall(self.children["proxy"].log.read_text(errors="replace"))
        return int(found[-1]) if found else None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for name in reversed(list(self.children)):
            self.children[name].stop()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def _target_url(run: EgressRun, side: str, path: str) -> tuple[str, str]:
    """(``--tcp`` address, request target) of ``side``."""
    if side == "direct":
        return f"127.0.0.1:{run.target_port}", path
    proxy = f"127.0.0.1:{run.bare_port if side == 'bare' else run.proxy_port}"
    if side == "route":
        return proxy, f"/{EXCEPTION}{path}"
    if side == "forward_new_tls":
        return proxy, f"http://{CLOSE_HOST}:{run.target_port}{path}-close"
    return proxy, f"http://{TARGET_HOST}:{run.target_port}{path}"


def loadgen_argv(
    run: EgressRun, side: str, workload: Workload, *, concurrency: int, duration: float, warmup: float
) -> list[str]:
    address, target = _target_url(run, side, workload.path)
    argv = [sys.executable, "-m", "bench.loadgen", "--tcp", address, "--path", target, "--method", workload.method,
            "--concurrency", str(concurrency), "--duration", str(duration), "--warmup", str(warmup)]  # fmt: skip
    if side == "direct":
        argv += ["--tls-ca", str(run.ca)]
    if workload.method == "POST":
        argv += ["--body-file", str(run.root / "upload.bin"), "--content-type", "application/octet-stream"]
    return argv


def _cpu(child: Child) -> tuple[float, float]:
    """User and system CPU seconds of the whole process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _measured(run: EgressRun, side: str, argv: list[str], cpus: set[int] | None) -> dict[str, Any]:
    """One generator run of ``side``: the CPU per request (user + system, and system alone) of the target and of
    the forwarder serving it (the proxy or the bare one), and the TCP connections the target accepted meanwhile."""
    connections = run.connections()
    before = {name: _cpu(child) for name, child in run.children.items()}
    result = run_json(argv, cpus=cpus)
    after = {name: _cpu(child) for name, child in run.children.items()}
    result["target_connections"] = run.connections() - connections - 1  # minus the first ask's own
    total = int(result["requests"]) + int(result["warmup_requests"])
    for role, name in (("target", "target"), ("forwarder", FORWARDER.get(side))):
        user, system = (after[name][0] - before[name][0], after[name][1] - before[name][1]) if name else (0.0, 0.0)
        result[f"{role}_cpu_us_per_request"] = round((user + system) / total * 1e6, 1) if total else None
        result[f"{role}_sys_us_per_request"] = round(system / total * 1e6, 1) if total else None
    return result


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds (rate, latency, CPU per request), errors and new target connections summed."""

    def median(key: str) -> float:
        return round(float(statistics.median(r[key] for r in runs)), 1)

    keys = ("rps", "p50_us", "p99_us", "target_cpu_us_per_request", "target_sys_us_per_request",
            "forwarder_cpu_us_per_request", "forwarder_sys_us_per_request", "generator_cpu_us_per_request")  # fmt: skip
    found: dict[str, Any] = {key: median(key) for key in keys}
    found["errors"] = sum(r["errors"] + r["warmup_errors"] for r in runs)
    found["requests"] = sum(r["requests"] + r["warmup_requests"] for r in runs)
    found["target_connections"] = sum(r["target_connections"] for r in runs)
    found["response_bytes"] = sorted({r["response_bytes"] for r in runs})
    found["rounds_rps"] = [r["rps"] for r in runs]
    found["rounds_p50_us"] = [r["p50_us"] for r in runs]
    return found


def _compare(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    sides = {side: summarize(found) for side, found in runs.items()}
    direct = sides["direct"]
    for side, found in sides.items():
        if side == "direct":
            continue
        paired = [s["rps"] / d["rps"] for d, s in zip(runs["direct"], runs[side], strict=True)]
        found["rps_ratio_to_direct"] = round(found["rps"] / direct["rps"], 3)
        found["paired_rps_ratio"] = round(statistics.median(paired), 3)
        found["added_p50_us"] = round(found["p50_us"] - direct["p50_us"], 1)
        found["added_p99_us"] = round(found["p99_us"] - direct["p99_us"], 1)
    return sides


@dataclass(frozen=True)
class Load:
    rounds: int
    duration: float
    warmup: float


def _workload(
    run: EgressRun, workload: Workload, load: Load, cpus: set[int] | None, progress: Callable[[], None]
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for concurrency in CONCURRENCIES:
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in workload.sides}
        for _ in range(load.rounds):
            for side in workload.sides:
                argv = loadgen_argv(run, side, workload, concurrency=concurrency, duration=load.duration,
                                    warmup=load.warmup)  # fmt: skip
                runs[side].append(_measured(run, side, argv, cpus))
                progress()
        found[str(concurrency)] = _compare(runs)
    return found


def _memory(child: Child) -> dict[str, float]:
    kib = child.memory_kib()
    return {"rss_mib": round(kib["VmRSS"] / 1024, 1), "hwm_mib": round(kib["VmHWM"] / 1024, 1),
            "anon_mib": round(kib["RssAnon"] / 1024, 1)}  # fmt: skip


def _check(run: EgressRun) -> dict[str, Any]:
    """One request per side before measuring: 200 and the same body everywhere; the headers each side got."""
    seen: dict[str, Any] = {}
    for side in ("direct", "forward", "route", "bare"):
        address, target = _target_url(run, side, "/v1/small")
        host, _, port = address.rpartition(":")
        connection: http.client.HTTPConnection
        if side == "direct":
            connection = http.client.HTTPSConnection(host, int(port), context=run.client_tls(), timeout=10)
        else:
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request("GET", target, headers={"Host": "localhost"})
            response = connection.getresponse()
            body = response.read()
            seen[side] = {"status": response.status, "bytes": len(body), "headers": dict(response.getheaders())}
        finally:
            connection.close()
        if response.status != 200 or len(body) != seen["direct"]["bytes"]:
            raise RuntimeError(f"{side}: HTTP {response.status}, {len(body)} bytes: {body[:200]!r}")
    return seen


def _served(by_concurrency: dict[str, Any], forwarder: str) -> int:
    return sum(found["requests"] for sides in by_concurrency.values() for side, found in sides.items()
               if FORWARDER.get(side) == forwarder)  # fmt: skip


def _progress(total: int) -> Callable[[], None]:
    done = [0]

    def step() -> None:
        done[0] += 1
        print(f"\r(j) {done[0]}/{total} generator runs", end="" if done[0] < total else "\n", file=sys.stderr,
              flush=True)  # fmt: skip

    return step


def run_egress_bench(*, rounds: int, duration: float, warmup: float, keep: bool = False) -> dict[str, Any]:
    """Start the target, the proxy and the bare forwarder, measure every workload, side and concurrency, stop them.

    Memory (``VmRSS``, ``VmHWM``) of both forwarders after start-up and the check, then after each workload, with the
    requests each has served by then."""
    target_cpus, proxy_cpus = _layout()
    load = Load(rounds, duration, warmup)
    progress = _progress(len(CONCURRENCIES) * rounds * sum(len(w.sides) for w in WORKLOADS))
    with EgressRun.create(keep=keep) as run:
        run.start(target_cpus, proxy_cpus)
        forwarders = {name: run.children[name] for name in ("proxy", "bare")}
        results: dict[str, Any] = {"check": _check(run), "workloads": {}}
        memory = {name: {"after_start": _memory(child)} for name, child in forwarders.items()}
        results["cpus"] = {"target": sorted(target_cpus or []), "forwarders_and_generator": sorted(proxy_cpus or [])}
        served = dict.fromkeys(forwarders, 0)
        for workload in WORKLOADS:
            found = _workload(run, workload, load, proxy_cpus, progress)
            results["workloads"][workload.name] = found
            for name, child in forwarders.items():
                served[name] += _served(found, name)
                memory[name][f"after_{workload.name}"] = {**_memory(child), "requests_served": served[name]}
        results["memory"] = memory
        run.children["proxy"].stop()
        results["grants_asked"] = run.grants_asked()
        if keep:
            results["run_dir"] = str(run.root)
    results["upload_bytes"] = UPLOAD_BYTES
    return results


def _side(found: dict[str, Any], *, latency: bool, proxied: bool) -> str:
    cpu = f"CPU/req: app {found['generator_cpu_us_per_request']:,.0f}"
    cpu += f" + forwarder {found['forwarder_cpu_us_per_request']:,.0f}" if proxied else ""
    cpu += f", target {found['target_cpu_us_per_request']:,.0f} us"
    errors = f" **{found['errors']} errors**" if found["errors"] else ""
    if latency:
        return f"p50 {found['p50_us']:,.0f} us, p99 {found['p99_us']:,.0f} us; {cpu}{errors}"
    return f"{found['rps']:,.0f}/s (p50 {found['p50_us']:,.0f} us); {cpu}{errors}"


def egress_rows(results: dict[str, Any]) -> list[list[str]]:
    """(j) rows: each proxied side against direct, at c=1 (latency) and c=16 (rate)."""
    rows = []
    for workload, by_concurrency in results["workloads"].items():
        for concurrency, sides in by_concurrency.items():
            latency = concurrency == "1"
            direct = f"direct: {_side(sides['direct'], latency=latency, proxied=False)}"
            for side, found in sides.items():
                if side == "direct":
                    continue
                if latency:
                    ratio = f"{found['added_p50_us']:+,.0f} us p50, {found['added_p99_us']:+,.0f} us p99"
                else:
                    ratio = f"{found['rps_ratio_to_direct']:.0%} (paired {found['paired_rps_ratio']:.0%})"
                rows.append([f"(j) {workload} c={concurrency}, {side}", _side(found, latency=latency, proxied=True),
                             direct, ratio, "side by side"])  # fmt: skip
    return rows
