"""Where a keep-alive grant's server CPU goes: ``spiffe-broker server`` under load, measured and profiled.

``python -m bench.profile_exchange --rounds 5 --duration 4 [--py-spy DIR]``

One token service started by its CLI as in (b) and (k): the stateful SQLite store (issuance ledger and audit
journal on), metrics on with a metrics port, the text log at INFO (one access line per request). The load
generator (``bench.loadgen``) POSTs RFC 8693 token exchanges and ``client_credentials`` requests over 16
keep-alive mutual-TLS connections; the server is pinned to the first CPU, the generator to the second.

Each round measures each grant in turn: the server's ``utime+stime`` over the run divided by its requests (warm-up
included). With ``--py-spy DIR``, one more run per grant is sampled by ``py-spy record --native`` (collapsed
stacks in ``DIR/<grant>.txt``); :func:`components` sorts every sample into the component whose code it was in
(innermost match first) and the shares are scaled by that grant's median CPU per request, giving microseconds per
request by component. py-spy's own CPU is not the server's, so the sampled run is not used for the CPU figure.
py-spy comes with the ``bench`` extra (``pip install -e .[bench]``).

With ``--callgrind DIR`` the services run under valgrind (a system package) and the result is instructions per
request (:func:`run_callgrind`); with ``--baseline DIR`` a second service runs the ``broker`` package in ``DIR``
(run from a directory without a ``broker/`` of its own, e.g. ``/tmp``), alternated round by round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import stack as stack_module
from bench.exchange_bench import exchange_bodies
from bench.procs import Child, cpu_count, free_port, pin, run_json
from bench.stack import BrokerStack

__all__ = ["COMPONENTS", "IDLE", "components", "main", "run_profile"]

IDLE = "idle"  # a thread waiting (for I/O, the GIL, a queue): not CPU; left out of the shares

# (component, substrings of a py-spy frame "function (file:line)"); a sample goes to the first component that
# matches its innermost matching frame. Order matters only between rules that can match the same frame.
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    (IDLE, ("epoll_wait", "clock_nanosleep", "pthread_cond_", "futex", "sem_clockwait", "sem_timedwait",
            "take_gil", "do_futex", "__select", "poll (", "PyThread_acquire_lock_timed",
            "_queue_SimpleQueue_get")),
    ("es256_sign", ("sign (broker/tokens/keys.py", "es256_signature (broker/jose/signer.py", "ECDSA_", "ecdsa_")),
    ("logging", ("/logging/", "broker/_logging.py", "access_log", "web_log.py")),
    ("metrics", ("prometheus_client/", "broker/web/metrics.py", "broker/server/metrics.py", "broker/metrics.py")),
    ("ledger_audit", ("broker/server/recorder.py", "broker/audit/", "broker/store/", "broker/_batch.py",
                      "broker/tokens/ledger.py", "sqlite3")),
    ("issue_claims_jws", ("broker/tokens/issuer.py", "broker/jose/signer.py", "broker/tokens/keyring.py",
                          "broker/tokens/keys.py")),
    ("policy", ("broker/tokens/policy.py",)),
    ("quarantine", ("broker/tokens/quarantine.py", "broker/server/revocations.py")),
    ("client_auth", ("broker/tokens/client_auth/", "broker/server/client_registry.py")),
    ("grant_checks", ("broker/tokens/grants/", "broker/tokens/svid_cache.py", "broker/identity/")),
    ("form_parse", ("broker/oauth/form.py", "broker/server/request.py", "urllib/parse.py", "broker/web/body.py")),
    ("endpoint_glue", ("broker/tokens/", "broker/oauth/")),
    ("handler_response", ("broker/server/handlers.py", "aiohttp/web_response.py", "json/")),
    ("middlewares", ("broker/web/", "broker/server/")),
    ("aiohttp_http", ("aiohttp/", "multidict", "yarl/", "_http_parser", "_http_writer")),
    ("tls", ("ssl.py", "sslproto.py", "SSL_", "ssl3_", "tls1", "libssl")),
    ("socket_io", ("selector_events.py", "sock_send", "sock_recv", "socketmodule")),
    ("event_loop", ("asyncio/", "uvloop", "selectors.py", "epoll")),
]  # fmt: skip


def components(collapsed: str) -> dict[str, float]:
    """Shares (0-1) of py-spy samples by component, from ``--format raw`` collapsed stacks."""
    counts: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        counts[_component_of(stack.split(";"))] += int(number)
    counts.pop(IDLE, None)
    total = sum(counts.values()) or 1
    return {name: round(count / total, 4) for name, count in counts.most_common()}


def _component_of(frames: list[str]) -> str:
    for frame in reversed(frames):  # innermost first
        for name, needles in COMPONENTS:
            if any(needle in frame for needle in needles):
                return name
    return "other"


def _loadgen_argv(stack: BrokerStack, port: int, body_file: Path, duration: float) -> list[str]:
    files = stack.files
    return [sys.executable, "-m", "bench.loadgen", "--tcp", f"127.0.0.1:{port}",
            "--tls-ca", str(files.bundle), "--tls-cert", str(files.client_cert), "--tls-key", str(files.client_key),
            "--method", "POST", "--path", "/token", "--body-file", str(body_file),
            "--content-type", "application/x-www-form-urlencoded",
            "--concurrency", "16", "--duration", str(duration), "--warmup", "0.5"]  # fmt: skip


def _sampled(argv: list[str], server: Child, out: Path, generator: set[int] | None) -> dict[str, Any]:
    """One load run while py-spy samples the server (native frames, 500 Hz; it pauses the server per sample)."""
    command = [shutil.which("py-spy") or "py-spy", "record", "--native", "--rate", "500", "--format", "raw",
               "--output", str(out), "--pid", str(server.pid)]  # fmt: skip
    spy = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=(out.parent / "py-spy.log").open("ab"),
    )
    try:
        return run_json(argv, cpus=generator, watch=server)
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
        spy.wait(30)


def _counted_requests(stack: BrokerStack, port: int, body: Path, requests: int) -> dict[str, int]:
    """Send exactly ``requests`` requests; the statuses seen (all must be 200 for the count to mean anything)."""
    argv = [*_loadgen_argv(stack, port, body, 1.0), "--requests", str(requests)]
    statuses: dict[str, int] = run_json(argv, timeout=3600)["statuses"]
    return statuses


def run_callgrind(*, requests: int, grants: list[str], trees: dict[str, Path | None], out: Path) -> dict[str, Any]:
    """Instructions per request, exact: each service runs under ``valgrind --tool=callgrind`` with instrumentation
    off until it has served a warm-up; then two load runs are counted (every thread, background tasks included),
    :data:`SMALL` requests and ``requests`` requests, each on 16 new connections; their difference divided by the
    difference in requests leaves out the handshakes and the per-connection certificate checks. Immune to the
    machine's load, unlike CPU time; ``callgrind_annotate`` reads the dumps (C functions only on Python 3.11).
    Under callgrind the server is ~50 times slower, so a ledger batch (50 ms window) holds fewer tokens than at
    full speed: the ledger's share per request comes out larger than it is."""
    results: dict[str, Any] = {}
    for name, tree in trees.items():
        with BrokerStack.create() as stack, _under_callgrind(out / name):
            child, port = _start(stack, "server", tree)
            stack.server_port = port
            bodies = _bodies(stack)
            results[name] = {grant: _count_grant(child, stack, port, bodies[grant], grant, requests, out / name)
                             for grant in grants}  # fmt: skip
    return results


SMALL = 100


def _count_grant(
    child: Child, stack: BrokerStack, port: int, body: Path, grant: str, requests: int, dumps: Path
) -> dict[str, Any]:
    def control(*args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(child.pid)], check=True, capture_output=True)

    _counted_requests(stack, port, body, 200)  # warm-up: memos, pools, the first batches
    control("-i", "on")
    small = _counted_requests(stack, port, body, SMALL)
    control("-d", f"{grant}-small")
    large = _counted_requests(stack, port, body, requests)
    control("-d", grant)
    control("-i", "off")
    counted = _dumped_ir(dumps, grant) - _dumped_ir(dumps, f"{grant}-small")
    return {"instructions_per_request": round(counted / (requests - SMALL)), "statuses": [small, large]}


def _dumped_ir(directory: Path, part: str) -> int:
    """The ``totals:`` (instructions) of the dump of ``part`` (``callgrind_control -d part``); its ``summary:``
    line is wrong (wraps around) in a dump after instrumentation was switched off and on again."""
    for dump in directory.glob("callgrind.out*"):
        text = dump.read_text(errors="replace")
        if f"\ndesc: Trigger: dump {part}\n" in text:
            for line in text.splitlines():
                if line.startswith("totals:"):
                    return int(line.split()[1])
    raise RuntimeError(f"no callgrind dump for {part} in {directory}")


@contextlib.contextmanager
def _under_callgrind(directory: Path) -> Iterator[None]:
    """Services started meanwhile run under callgrind (instrumentation off), dumps in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=no",
                f"--callgrind-out-file={directory}/callgrind.out.%p"]  # fmt: skip
    # bench.stack builds every server's argv from its module globals: wrap them while the block runs
    saved = vars(stack_module)["BROKER_CLI"], vars(stack_module)["START_TIMEOUT"]
    vars(stack_module).update(BROKER_CLI=[*valgrind, *saved[0]], START_TIMEOUT=600.0)
    try:
        yield
    finally:
        vars(stack_module).update(BROKER_CLI=saved[0], START_TIMEOUT=saved[1])


def _start(stack: BrokerStack, name: str, tree: Path | None, issuer: str | None = None) -> tuple[Child, int]:
    """A token service (metrics on, with a metrics port); ``tree``: run the ``broker`` package found there;
    ``issuer``: the issuer identifier to share (the JWT-SVIDs name one audience), else from its own address."""
    env = {"SPIFFE_BROKER_METRICS__PORT": str(free_port())}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return stack.start_named_server(name, env=env, issuer=issuer)


def _bodies(stack: BrokerStack) -> dict[str, Path]:
    bodies = {}
    for grant, body in exchange_bodies(stack.jwt_svid()).items():
        bodies[grant] = stack.files.root / f"{grant}.form"
        bodies[grant].write_bytes(body)
    return bodies


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "server_cpu_us_per_request": round(statistics.median(r["server_cpu_us_per_request"] for r in runs), 1),
        "rounds_cpu_us": [r["server_cpu_us_per_request"] for r in runs],
        "rps": round(statistics.median(r["rps"] for r in runs), 1),
        "statuses": runs[-1]["statuses"],
    }  # fmt: skip (a status other than 200 makes the figure meaningless)


def run_profile(
    *, rounds: int, duration: float, grants: list[str], spy_dir: Path | None, baseline: Path | None = None
) -> dict[str, Any]:
    """CPU per request by grant (medians over ``rounds``), the component shares if ``spy_dir``; with ``baseline``
    (a directory holding another ``broker`` package) a second service runs that code, alternated in each round,
    and the per-round differences are reported."""
    server_cpus, generator_cpus = ({0}, {1}) if cpu_count() >= 2 else (None, None)
    with BrokerStack.create() as stack:
        services = {"current": _start(stack, "server", None)}
        stack.server_port = services["current"][1]
        if baseline is not None:
            services["baseline"] = _start(stack, "baseline", baseline, issuer=stack.issuer)
        for child, _ in services.values():
            pin(child.pid, server_cpus)
        bodies = _bodies(stack)
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {(s, g): [] for s in services for g in grants}
        for index in range(rounds):
            order = list(services) if index % 2 == 0 else list(reversed(services))
            for grant in grants:
                for name in order:
                    child, port = services[name]
                    argv = _loadgen_argv(stack, port, bodies[grant], duration)
                    runs[name, grant].append(run_json(argv, cpus=generator_cpus, watch=child))
        results: dict[str, Any] = {name: {g: _summary(runs[name, g]) for g in grants} for name in services}
        if baseline is not None:
            results["delta_us"] = {g: _paired_delta(runs["current", g], runs["baseline", g]) for g in grants}
        if spy_dir is not None:
            child, port = services["current"]
            for grant in grants:
                out = spy_dir / f"{grant}.txt"
                _sampled(_loadgen_argv(stack, port, bodies[grant], duration), child, out, generator_cpus)
                cpu = results["current"][grant]["server_cpu_us_per_request"]
                shares = components(out.read_text())
                results["current"][grant]["components_us"] = {k: round(v * cpu, 1) for k, v in shares.items()}
    return results


def _paired_delta(current: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> float:
    """Median over rounds of (current - baseline) server CPU per request: negative is a saving."""
    key = "server_cpu_us_per_request"
    return round(statistics.median(float(c[key] - b[key]) for c, b in zip(current, baseline, strict=True)), 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_exchange")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--grants", default="client_credentials,token_exchange")
    parser.add_argument("--py-spy", type=Path, dest="spy_dir", help="also sample with py-spy into this directory")
    parser.add_argument("--baseline", type=Path, help="a directory with another broker package, run alternately")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--callgrind", type=Path, help="count instructions per request under callgrind, dumps here")
    parser.add_argument("--requests", type=int, default=1000, help="requests counted per grant under callgrind")
    parser.add_argument("--analyse", type=Path, help="only print the component shares of a collapsed-stack file")
    args = parser.parse_args(argv)
    if args.analyse is not None:
        print(json.dumps(components(args.analyse.read_text()), indent=1), flush=True)
        return
    if args.spy_dir is not None:
        args.spy_dir.mkdir(parents=True, exist_ok=True)
    if args.callgrind is not None:
        trees = {"current": None, **({"baseline": args.baseline} if args.baseline else {})}
        results = run_callgrind(requests=args.requests, grants=args.grants.split(","), trees=trees, out=args.callgrind)
    else:
        results = run_profile(rounds=args.rounds, duration=args.duration, grants=args.grants.split(","),
                          spy_dir=args.spy_dir, baseline=args.baseline)  # fmt: skip
    text = json.dumps(results, indent=1)
    if args.output is not None:
        args.output.write_text(text + "\n")
    print(text, flush=True)


if __name__ == "__main__":
    main()
