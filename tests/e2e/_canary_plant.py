"""Planting canaries in every input of a running `spiffe-broker dev`, and the scanner that looks for them.

:class:`Harvest` keeps what a scan needs: every response (status, body), the secrets the run produced (access
tokens, JWT-SVIDs) and the canaries planted. :func:`scan` reports every leak in a text: a canary, a secret or its
signature, any JWT, a private key (PEM or a JWK ``d``) or a line of a private key file.

What is planted: secret-bearing inputs (tokens in form fields, ``Authorization``, ``DPoP``, cookies, unknown
headers and parameters, bodies, query strings, malformed request lines, gRPC metadata, JWT-SVIDs to validate,
comments in the policy and entries files). Identifier fields (``audience``, ``scope``, ``resource``) are not: a
refusal may name them to the operator, and they are not secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path

RUN = uuid.uuid4().hex[:12]
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}")
_JWK_D = re.compile(r"""["']d["']\s*:\s*["'][A-Za-z0-9_-]{16,}""")
_PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def canary(kind: str) -> str:
    return f"CNRY{RUN}{kind}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def canary_jwt(kind: str) -> str:
    """A JWT-SVID-shaped canary: its header and claims name it, and its signature part is the canary itself."""
    header = _b64(json.dumps({"alg": "ES256", "typ": "JWT", "kid": canary(kind)}).encode())
    claims = _b64(json.dumps({"sub": "spiffe://example.org/workload", "aud": ["x"], "exp": 4_000_000_000}).encode())
    return f"{header}.{claims}.{canary(kind)}"


@dataclass
class Harvest:
    responses: list[tuple[str, int, bytes]] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)  # name -> value (tokens, JWT-SVIDs)
    planted: set[str] = field(default_factory=set)

    def record(self, what: str, status: int, body: bytes) -> None:
        self.responses.append((what, status, body))

    def error_bodies(self) -> list[tuple[str, bytes]]:
        return [(what, body) for what, status, body in self.responses if status >= 400 or status == 0]


def key_lines(state_dir: Path) -> list[str]:
    """The base64 lines of every private key file the dev process wrote (PEM bodies)."""
    lines: list[str] = []
    for path in state_dir.rglob("*"):
        if path.is_file() and b"PRIVATE KEY" in path.read_bytes():
            lines += [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("-----")]
    return lines


def scan(text: str, secrets: dict[str, str], keys: list[str]) -> list[str]:
    """Every leak in ``text``, one description each."""
    found = [f"canary {m.group(0)[:40]}" for m in re.finditer(f"CNRY{RUN}[A-Za-z0-9-]*", text)]
    for name, value in secrets.items():
        for piece in {value, value.rsplit(".", 1)[-1]}:
            if len(piece) >= 16 and piece in text:
                found.append(f"{name} ({'signature' if piece != value else 'whole'})")
    found += [f"a JWT {m.group(0)[:24]}..." for m in _JWT.finditer(text)]
    found += ["a private key PEM" for _ in _PEM_KEY.finditer(text)]
    found += ["a JWK private member d" for _ in _JWK_D.finditer(text)]
    found += ["a line of a private key file" for line in keys if len(line) >= 16 and line in text]
    return found


async def raw_send(
    data: bytes, *, unix: str | None = None, port: int | None = None, tls: ssl.SSLContext | None = None
) -> bytes:
    """Write raw bytes to a listener, read the answer until EOF or 3 s."""

    def exchange(conn: socket.socket) -> bytes:
        received = b""
        try:
            conn.sendall(data)
            while chunk := conn.recv(65536):
                received += chunk
        except (OSError, ssl.SSLError):
            pass
        return received

    def run() -> bytes:
        sock = socket.socket(socket.AF_UNIX) if unix else socket.create_connection(("127.0.0.1", port or 0), 3)
        sock.settimeout(3)
        if unix:
            with sock:
                sock.connect(unix)
                return exchange(sock)
        assert tls is not None
        with tls.wrap_socket(sock) as conn:  # the SSLSocket takes the socket over and closes it
            return exchange(conn)

    return await asyncio.to_thread(run)


def split_http(reply: bytes) -> tuple[int, bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return status, body


def malformed_requests(where: str, host: str, secret: str) -> list[str]:
    """Requests an HTTP parser refuses, each carrying ``secret`` and a canary where a parser may echo them."""
    c, auth = canary(where), f"Authorization: Bearer {secret}"
    return [
        f"GET /?access_token={c}-q HTTP/1.1\r\nHost: {host}\r\n{auth}\r\nBad Header {c}\r\n\r\n",
        f"GET /{c}-line\x00 HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n\r\n",
        f"POST /token HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nContent-Length: 6\r\nX: {secret}\r\n\r\n{c}-b",
        f"POST /token HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nX: {secret}\r\n\r\nzz\r\n{c}\r\n",
        f"{c}-method / HTTP/1.1\r\nHost: {host}\r\nDPoP: {secret}\r\n\r\n",
        f"GET / HTTP/1.1\r\nHost: {host}\r\nX-Long: {'a' * 70000}{c}\r\n{auth}\r\n\r\n",
    ]
