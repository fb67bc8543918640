"""Helpers for the app client tests: fake tokens and a scripted fake sidecar on a Unix socket."""

from __future__ import annotations

import base64
import json
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

APP_ID = "spiffe://example.org/app"


def fake_token(x5t: str | None) -> str:
    """An unsigned token shaped like the broker's: only its ``cnf`` matters to the client."""
    claims = {"sub": APP_ID, **({"cnf": {"x5t#S256": x5t}} if x5t else {})}
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJFUzI1NiJ9.{part}.c2ln"


class FakeSidecar:
    """Answers ``/v1/token`` from ``answer`` (status, body) on a Unix socket; records the query strings.

    ``POST /v1/dpop-proof`` is answered from ``proof_answer`` (numbered from 1), its bodies recorded in ``posts``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.queries: list[str] = []
        self.answer: Callable[[int], tuple[int, bytes]] = lambda _n: (503, b'{"error":"not_ready"}')
        self.posts: list[tuple[str, str, bytes]] = []  # (path, content type, body)
        self.proof_answer: Callable[[int], tuple[int, bytes]] = lambda _n: (200, b'{"proof":"p.r.f"}')
        sidecar = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                sidecar.queries.append(self.path)
                status, body = sidecar.answer(len(sidecar.queries))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                sidecar.posts.append((self.path, self.headers.get("Content-Type", ""), self.rfile.read(length)))
                status, body = sidecar.proof_answer(len(sidecar.posts))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

            def address_string(self) -> str:
                return "unix"

        self.server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bind_to(self, *x5ts: str | None) -> None:
        """Answer with tokens bound to ``x5ts`` in turn (the last one from then on)."""

        def answer(n: int) -> tuple[int, bytes]:
            x5t = x5ts[min(n, len(x5ts)) - 1]
            return 200, json.dumps({"access_token": fake_token(x5t), "token_type": "Bearer", "expires_in": 60}).encode()

        self.answer = answer

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
