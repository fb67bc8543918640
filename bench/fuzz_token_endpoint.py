"""Fuzz a real ``spiffe-broker server`` over mTLS with mutated token requests, then scan its DEBUG log.

    python -m bench.fuzz_token_endpoint                       # 100,000 requests, 32 connections
    python -m bench.fuzz_token_endpoint --requests 5000 --concurrency 8 --seed 7

The server runs as a subprocess (file identity from a throwaway dev CA, ``--log-level DEBUG`` and
``--log-level-for aiohttp=DEBUG``, stderr to a file). Cases come from ``tests/fuzz/token_cases.py``: each has a
verdict (``token``: must get 200 with a token; ``refused``: must get a 4xx without one; ``any``: byte-level
chaos, only never a 5xx) and a unique canary (``CNRY-<n>``). Reported: counts by verdict and status, every 5xx,
every token for a ``refused`` case, every refused valid case, canaries in responses, and after the run, every
log line holding a canary, a subject JWT-SVID, an issued access token's signature, a private key or a traceback.
Exit status 1 if anything is found.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker._sealing import generate_kek_file
from broker.devtools.devca import DevCA
from broker.identity.spiffeid import SpiffeId
from broker.testing.policy import policy_rule, policy_yaml
from tests.fuzz.token_cases import Case, Target, make_case

BROKER_ID = SpiffeId.parse("spiffe://example.org/spiffe-broker")
CLIENT_ID = SpiffeId.parse("spiffe://example.org/ns/shop/sa/web")
API = "https://api.example.org"
SCOPES = ("orders:read", "orders:write")
READ_TIMEOUT = 15.0  # above the server's 10 s request deadline: a stalled case is closed by the server first


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    five_xx: list[str] = field(default_factory=list)
    token_for_invalid: list[str] = field(default_factory=list)
    valid_refused: list[str] = field(default_factory=list)
    echoed: list[str] = field(default_factory=list)
    subject_tokens: set[str] = field(default_factory=set)
    access_tokens: set[str] = field(default_factory=set)
    done: int = 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_identity(ca: DevCA, directory: Path) -> None:
    svid = ca.issue_x509_svid(BROKER_ID, ttl=24 * 3600)
    client = ca.issue_x509_svid(CLIENT_ID, ttl=24 * 3600)
    for name, data in [("cert.pem", svid.chain_pem()), ("key.pem", svid.key_pem()), ("bundle.pem",
                       ca.x509_bundle().to_pem()), ("jwks.json", ca.jwks()), ("client.pem", client.chain_pem()),
                       ("client-key.pem", client.key_pem())]:  # fmt: skip
        (directory / name).write_bytes(data)
    (directory / "policy.yaml").write_text(
        policy_yaml(policy_rule(spiffe_id=CLIENT_ID, audiences=[API], scopes=SCOPES))
    )


def _kek(directory: Path) -> Path:
    path = directory / "kek"
    if not path.exists():
        generate_kek_file(path)
    return path


def _start_server(directory: Path, port: int) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "broker.cli", "--log-level", "DEBUG", "--log-level-for", "aiohttp=DEBUG", "server",
        "--listen", f"127.0.0.1:{port}", "--state-dir", str(directory / "state"),
        "--policy", str(directory / "policy.yaml"), "--cert", str(directory / "cert.pem"),
        "--key", str(directory / "key.pem"), "--bundle", str(directory / "bundle.pem"),
        "--jwt-bundle", f"example.org={directory / 'jwks.json'}", "--kek-file", str(_kek(directory)),
    ]  # fmt: skip
    return start_listening(args, directory, port)


def start_listening(args: list[str], directory: Path, port: int) -> subprocess.Popen[bytes]:
    """Run ``args`` (a server, without ``SPIFFE_*`` from the environment, logging to ``directory/server.log``)
    until it listens on ``port``; SystemExit if it exits or does not listen within 30 s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")}
    log = (directory / "server.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: see {directory / 'server.log'}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start listening within 30 s")


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return int(head.split(b" ", 2)[1]), head, await reader.readexactly(length)


def _judge(case: Case, canary: str, status: int, head: bytes, body: bytes, tally: Tally) -> None:
    tally.statuses[f"{case.expect}:{status}"] += 1
    labels = ",".join(case.labels)
    if status >= 500:
        tally.five_xx.append(f"{status} {labels}")
    if canary.encode() in head + body:
        tally.echoed.append(labels)
    has_token = b'"access_token"' in body
    if has_token:
        tally.access_tokens.add(json.loads(body)["access_token"].rsplit(".", 1)[1])
    if case.expect == "refused" and (has_token or not 400 <= status < 500):
        tally.token_for_invalid.append(f"{status} {labels}")  # a token, or any answer but a 4xx
    if case.expect == "token" and not (status == 200 and has_token):
        tally.valid_refused.append(f"{status} {labels} {body[:120]!r}")


async def _worker(queue: asyncio.Queue[int], ctx: ssl.SSLContext, port: int, target: Target, seed: int,
                  tally: Tally) -> None:  # fmt: skip
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while not queue.empty():
        index = queue.get_nowait()
        canary = f"CNRY-{index:07d}"
        case = make_case(random.Random(seed * 10_000_000 + index), target, canary)
        fresh = "chaos" in case.labels or "_i_framing" in case.labels  # never pipeline-confuse a reply
        if conn is None or fresh:
            conn = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        reader, writer = conn
        try:
            writer.write(case.raw)
            async with asyncio.timeout(READ_TIMEOUT):
                status, head, body = await _read_reply(reader)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, TimeoutError):
            status, head, body = 0, b"", b""
        _judge(case, canary, status, head, body, tally)
        tally.done += 1
        if status == 0 or fresh or b"connection: close" in head.lower() or head.startswith(b"HTTP/1.0"):
            writer.close()
            conn = None
    if conn is not None:
        conn[1].close()


_B64URL_RUN = re.compile(r"[A-Za-z0-9_-]{40,}")


def _scan_log(path: Path, tally: Tally) -> dict[str, Any]:
    """Every line holding a canary, a subject JWT-SVID's or issued token's signature, a key or a traceback."""
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    found: dict[str, Any] = {"log_lines": len(lines), "log_bytes": len(text)}
    found["canary_lines"] = [line[:160] for line in lines if "CNRY-" in line][:20]
    runs = [set(_B64URL_RUN.findall(line)) for line in lines]  # signatures are 86-character base64url runs
    probe = f"DEBUG x: token=e30.e30.{next(iter(tally.subject_tokens), 'none')} leaked"  # positive control
    found["scanner_finds_a_planted_signature"] = bool(set(_B64URL_RUN.findall(probe)) & tally.subject_tokens)
    found["subject_jwt_svid_lines"] = sum(1 for r in runs if r & tally.subject_tokens)
    found["access_token_lines"] = sum(1 for r in runs if r & tally.access_tokens)
    found["private_key_lines"] = sum(1 for line in lines if "PRIVATE KEY" in line)
    found["traceback_lines"] = sum(1 for line in lines if "Traceback" in line)
    found["error_lines"] = sum(1 for line in lines if " ERROR " in line)
    return found


async def _run(args: argparse.Namespace, directory: Path, port: int) -> Tally:
    ca = DevCA.ephemeral("example.org")
    _write_identity(ca, directory)
    tally = Tally()

    def mint() -> str:
        token = ca.mint_jwt_svid(CLIENT_ID, [f"https://127.0.0.1:{port}"], ttl=600).token
        tally.subject_tokens.add(token.rsplit(".", 1)[1])
        return token

    target = Target(audience=API, scopes=SCOPES, client_id=str(CLIENT_ID), mint_subject_token=mint)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(directory / "bundle.pem")
    ctx.load_cert_chain(directory / "client.pem", directory / "client-key.pem")
    proc = _start_server(directory, port)
    try:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(args.requests):
            queue.put_nowait(index)
        started = time.monotonic()
        progress = asyncio.create_task(_progress(tally, args.requests, started))
        await asyncio.gather(*(_worker(queue, ctx, port, target, args.seed, tally) for _ in range(args.concurrency)))
        progress.cancel()
        tally.statuses["_seconds"] = round(time.monotonic() - started)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return tally


async def _progress(tally: Tally, total: int, started: float) -> None:
    while True:
        await asyncio.sleep(10)
        rate = tally.done / max(time.monotonic() - started, 1e-9)
        print(f"  {tally.done}/{total} ({rate:.0f}/s)", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server.log)")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="fuzz-token-"))
    tally = asyncio.run(_run(args, directory, _free_port()))
    scan = _scan_log(directory / "server.log", tally)
    report = {
        "requests": tally.done,
        "by_verdict_and_status": dict(sorted(tally.statuses.items())),
        "five_xx": tally.five_xx[:20],
        "five_xx_count": len(tally.five_xx),
        "token_for_invalid": tally.token_for_invalid[:20],
        "token_for_invalid_count": len(tally.token_for_invalid),
        "valid_refused": tally.valid_refused[:20],
        "valid_refused_count": len(tally.valid_refused),
        "canary_in_response_count": len(tally.echoed),
        "log_scan": scan,
        "work_dir": str(directory) if args.keep else None,
    }
    print(json.dumps(report, indent=2))
    if not args.keep:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
    leak_keys = ("canary_lines", "subject_jwt_svid_lines", "access_token_lines", "private_key_lines", "traceback_lines")
    leaks = any(scan[key] for key in leak_keys)
    bad = tally.five_xx or tally.token_for_invalid or tally.valid_refused or tally.echoed or leaks
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
