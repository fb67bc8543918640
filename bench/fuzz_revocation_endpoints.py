"""Fuzz ``/revoke`` (RFC 7009) and ``/introspect`` (RFC 7662) of a real ``spiffe-broker server`` over mTLS, check
its revocation log, then scan its DEBUG log.

    python -m bench.fuzz_revocation_endpoints                  # 20,000 cases, 8 threads
    python -m bench.fuzz_revocation_endpoints --cases 2000 --concurrency 4 --seed 7

The server runs as a subprocess with a SQLite store (file identity from a throwaway dev CA, ``--log-level DEBUG``
and ``--log-level-for aiohttp=DEBUG``, output to a file), the introspection allow-list and the admin of
``tests/fuzz/stateful_service_thread.py``, and a signing key the bench wrote (imported once by the keyring as the
legacy key file), so that it can sign expired tokens and tokens of another issuer with the server's own key.
Cases come from ``tests/fuzz/revocation_cases.py`` (the CI fuzz tests run the same generator), each with a unique
canary (``CNRY-<n>``) and a verdict checked on its answer (never a 5xx; 200 or an RFC 6749 §5.2 error document;
``{"active": false}`` exactly for anything but a valid live token; the RFC 7662 §2.2 members for one; a token
revoked by its owner or an admin is inactive at once). Cases run concurrently, so the revocation log is checked
as a whole once the server has stopped: every entry is a ``token.revoked`` of a case that was allowed to revoke
its own valid token, and every case that revoked one has its entry. Then every line of the server's log is
scanned for canaries, issued access tokens' signatures, private keys, tracebacks and ERROR lines, with a positive
control. Exit status 1 if anything is found.
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
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from bench.fuzz_token_endpoint import start_listening
from broker._sealing import generate_kek_file
from broker.devtools.devca import DevCA
from broker.events.revocations import LogEntry, TokenRevoked
from broker.store import open_store
from broker.store.url import StoreUrl
from broker.tokens.keys import ACTIVE_KEY_FILE, SigningKey
from tests.fuzz.revocation_cases import Kit, RevocationCase, allowed_jtis, judge, make_case
from tests.fuzz.stateful_service_thread import BROKER_ID, CALLERS, OTHER_API, policy_text
from tests.fuzz.token_service_thread import Reply, send

_B64URL_RUN = re.compile(r"[A-Za-z0-9_-]{40,}")


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    five_xx: int = 0
    allowed: set[str] = field(default_factory=set)  # jtis the cases may have put on the log
    required: set[str] = field(default_factory=set)  # jtis the cases did put on the log (a 200 "revoked")
    signatures: set[str] = field(default_factory=set)  # of every access token minted
    done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_identity(ca: DevCA, directory: Path) -> SigningKey:
    """Certificates, policy, config, KEK, and the signing key the keyring imports at its first start."""
    svid = ca.issue_x509_svid(BROKER_ID, ttl=24 * 3600)
    files = {"cert.pem": svid.chain_pem(), "key.pem": svid.key_pem(), "bundle.pem": ca.x509_bundle().to_pem(),
             "jwks.json": ca.jwks(), "policy.yaml": policy_text().encode()}  # fmt: skip
    for name, spiffe_id in CALLERS.items():
        client = ca.issue_x509_svid(spiffe_id, ttl=24 * 3600)
        files[f"{name}.pem"], files[f"{name}-key.pem"] = client.chain_pem(), client.key_pem()
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (directory / "broker.toml").write_text(
        f'[admin]\nspiffe_ids = ["{CALLERS["admin"]}"]\n\n'
        f'[introspection]\nspiffe_ids = ["{CALLERS["rs"]}", "{CALLERS["rs_narrow"]}"]\n\n'
        f'[introspection.audiences]\n"{CALLERS["rs_narrow"]}" = ["{OTHER_API}"]\n'
    )
    generate_kek_file(directory / "kek")
    key = SigningKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
    state = directory / "state"
    state.mkdir(mode=0o700)
    fd = os.open(state / ACTIVE_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.to_pem())
    return key


def _start_server(directory: Path, port: int) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "broker.cli", "--log-level", "DEBUG", "--log-level-for", "aiohttp=DEBUG", "server",
        "--config", str(directory / "broker.toml"), "--listen", f"127.0.0.1:{port}",
        "--state-dir", str(directory / "state"), "--policy", str(directory / "policy.yaml"),
        "--cert", str(directory / "cert.pem"), "--key", str(directory / "key.pem"),
        "--bundle", str(directory / "bundle.pem"), "--jwt-bundle", f"example.org={directory / 'jwks.json'}",
        "--kek-file", str(directory / "kek"),
    ]  # fmt: skip
    return start_listening(args, directory, port)


class Runner:
    """One TLS context per caller; mints, sends and judges cases (thread-safe)."""

    def __init__(self, directory: Path, port: int, key: SigningKey, tally: Tally) -> None:
        self.port, self.tally = port, tally
        self.contexts = {name: self._context(directory, name) for name in CALLERS}
        self.kit = Kit(issuer=f"https://127.0.0.1:{port}", callers={k: str(v) for k, v in CALLERS.items()},
                       mint=self.mint, signing_key=lambda: key)  # fmt: skip

    @staticmethod
    def _context(directory: Path, name: str) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(directory / "bundle.pem")
        ctx.load_cert_chain(directory / f"{name}.pem", directory / f"{name}-key.pem")
        return ctx

    def context(self, caller: str | None) -> ssl.SSLContext:
        if caller is not None:
            return self.contexts[caller]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no client certificate
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def post(self, caller: str, path: str, form: str) -> Reply:
        head = f"POST {path} HTTP/1.1\r\nHost: b\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        return send(self.contexts[caller], self.port, f"{head}Content-Length: {len(form)}\r\n\r\n{form}".encode(), 15)

    def mint(self, caller: str) -> str:
        reply = self.post(caller, "/token", "grant_type=client_credentials&audience=https%3A%2F%2Fapi.example.org")
        if reply.status != 200:
            raise RuntimeError(f"minting a token for {caller} failed: {reply.status} {reply.body[:120]!r}")
        token: str = json.loads(reply.body)["access_token"]
        with self.tally.lock:
            self.tally.signatures.add(token.rsplit(".", 1)[1])
        return token

    def run(self, index: int, seed: int) -> None:
        canary = f"CNRY-{index:07d}"
        case = make_case(random.Random(seed * 10_000_000 + index), self.kit, canary)
        problems = []
        if case.pre_revoke:
            assert case.token is not None and case.owner is not None
            if self.post(case.owner, "/revoke", f"token={case.token}").status != 200:
                problems.append("the owner's own revocation before the case failed")
        reply = send(self.context(case.caller), self.port, case.raw, 15)
        problems += judge(case, reply.status, reply.head, reply.body, None, canary)
        if case.expect == "revoked" and reply.status == 200 and case.token is not None:
            after = self.post("rs", "/introspect", f"token={case.token}")
            if after.body != b'{"active": false}':
                problems.append(f"revoked, yet introspection says {after.body[:80]!r}")
        self._count(case, reply, problems)

    def _count(self, case: RevocationCase, reply: Reply, problems: list[str]) -> None:
        with self.tally.lock:
            tally = self.tally
            tally.statuses[f"{case.endpoint}:{case.expect}:{reply.status}"] += 1
            tally.five_xx += reply.status >= 500
            tally.allowed |= allowed_jtis(case)
            if case.pre_revoke and case.jti is not None:
                tally.allowed.add(case.jti)
                tally.required.add(case.jti)
            if case.expect == "revoked" and reply.status == 200 and case.jti is not None:
                tally.required.add(case.jti)
            tally.problem_count += len(problems)
            tally.problems += problems[: max(0, 20 - len(tally.problems))]
            tally.done += 1


def _check_log(directory: Path, tally: Tally) -> dict[str, Any]:
    """The whole revocation log against what the cases were allowed to revoke and did revoke."""

    async def read() -> list[LogEntry]:
        store = await open_store(StoreUrl.parse(f"sqlite:///{directory / 'state' / 'broker.db'}"))
        try:
            entries: list[LogEntry] = []
            after = 0
            while True:
                page = await store.revocations.read(after, limit=1000)
                entries += page.entries
                if not page.entries:
                    return entries
                after = page.entries[-1].seq
        finally:
            await store.close()

    entries = asyncio.run(read())
    jtis = [e.event.jti for e in entries if isinstance(e.event, TokenRevoked)]
    strays = [e.seq for e in entries if not (isinstance(e.event, TokenRevoked) and e.event.jti in tally.allowed)]
    return {
        "entries": len(entries),
        "stray_entries": len(strays),
        "duplicate_jtis": len(jtis) - len(set(jtis)),
        "revocations_missing": len(tally.required - set(jtis)),
        "revocations_answered": len(tally.required),
    }


def _scan_log(path: Path, tally: Tally) -> dict[str, Any]:
    """Every line holding a canary, a minted token's signature, a private key or a traceback."""
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    runs = [set(_B64URL_RUN.findall(line)) for line in lines]
    probe = f"DEBUG x: token=e30.e30.{next(iter(tally.signatures), 'none')} leaked"  # positive control
    return {
        "log_lines": len(lines),
        "log_bytes": len(text),
        "scanner_finds_a_planted_signature": bool(set(_B64URL_RUN.findall(probe)) & tally.signatures),
        "canary_lines": [line[:160] for line in lines if "CNRY-" in line][:20],
        "access_token_lines": sum(1 for r in runs if r & tally.signatures),
        "private_key_lines": sum(1 for line in lines if "PRIVATE KEY" in line),
        "traceback_lines": sum(1 for line in lines if "Traceback" in line),
        "error_lines": sum(1 for line in lines if " ERROR " in line),
    }


def _run(args: argparse.Namespace, directory: Path) -> tuple[Tally, float]:
    key = _write_identity(DevCA.ephemeral("example.org"), directory)
    port, tally = _free_port(), Tally()
    proc = _start_server(directory, port)
    started = time.monotonic()
    try:
        runner = Runner(directory, port, key, tally)
        with ThreadPoolExecutor(args.concurrency) as pool:
            for index, future in enumerate([pool.submit(runner.run, i, args.seed) for i in range(args.cases)], 1):
                future.result()
                if index % 2000 == 0:
                    rate = index / (time.monotonic() - started)
                    print(f"  {index}/{args.cases} ({rate:.0f} cases/s)", file=sys.stderr, flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return tally, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server.log, state)")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="fuzz-revocation-"))
    tally, seconds = _run(args, directory)
    log_check, scan = _check_log(directory, tally), _scan_log(directory / "server.log", tally)
    report = {
        "cases": tally.done,
        "seconds": round(seconds),
        "tokens_minted": len(tally.signatures),
        "by_endpoint_verdict_and_status": dict(sorted(tally.statuses.items())),
        "five_xx_count": tally.five_xx,
        "problem_count": tally.problem_count,
        "problems": tally.problems,
        "revocation_log": log_check,
        "log_scan": scan,
        "work_dir": str(directory) if args.keep else None,
    }
    print(json.dumps(report, indent=2))
    if not args.keep:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
    leaks = scan["canary_lines"] or scan["access_token_lines"] or scan["private_key_lines"] or scan["traceback_lines"]
    log_bad = log_check["stray_entries"] or log_check["duplicate_jtis"] or log_check["revocations_missing"]
    return 1 if tally.five_xx or tally.problem_count or leaks or log_bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
