"""A real token service over mTLS in a background thread, for synchronous hypothesis tests, and a log recorder.

Test modules import the fixtures (``token_service``, ``client_tls``) from here.

The service runs on its own event loop in a thread (hypothesis drives plain functions); every log record of the
process is kept, formatted with its traceback, so a test can scan all of it for canaries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.server.service import RunningTokenService, start_token_service
from broker.testing.policy import policy_rule, policy_yaml
from broker.tokens.keys import InMemoryKeyStore
from broker.tokens.policy import FilePolicyStore
from broker.web import ListenerLimits
from tests.fuzz.token_cases import Target

BROKER_ID = SpiffeId.parse("spiffe://example.org/spiffe-broker")
CLIENT_ID = SpiffeId.parse("spiffe://example.org/ns/shop/sa/web")
ISSUER = "https://broker.test:8443"
API = "https://api.example.org"
SCOPES = ("orders:read", "orders:write")
POLICY = policy_yaml(policy_rule(spiffe_id=CLIENT_ID, audiences=[API], scopes=SCOPES))


class LogRecorder(logging.Handler):
    """Every record, formatted with its exception text (thread-safe: ``logging.Handler`` holds a lock)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class ServiceThread:
    """The token service on a loopback port, its CA and client TLS context, and the recorded logs."""

    ca: DevCA
    limits: ListenerLimits
    port: int = 0
    logs: LogRecorder = field(default_factory=LogRecorder)
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    service: RunningTokenService | None = None

    def target(self) -> Target:
        return Target(
            audience=API,
            scopes=SCOPES,
            client_id=str(CLIENT_ID),
            mint_subject_token=lambda: self.ca.mint_jwt_svid(CLIENT_ID, [ISSUER], ttl=300).token,
        )

    def client_context(self, directory: Path) -> ssl.SSLContext:
        svid = self.ca.issue_x509_svid(CLIENT_ID, ttl=3600)
        (directory / "c.pem").write_bytes(svid.chain_pem())
        (directory / "k.pem").write_bytes(svid.key_pem())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(cadata=self.ca.x509_bundle().to_pem().decode())
        ctx.load_cert_chain(directory / "c.pem", directory / "k.pem")
        return ctx


def _run(thread: ServiceThread, policy: Path, ready: threading.Event) -> None:
    asyncio.set_event_loop(thread.loop)

    async def start() -> None:
        thread.service = await start_token_service(
            source=InMemorySvidSource(thread.ca, BROKER_ID),
            policy_store=FilePolicyStore(policy),
            key_store=InMemoryKeyStore(),
            listen_host="127.0.0.1",
            listen_port=0,
            issuer=ISSUER,
            limits=thread.limits,
        )
        thread.port = thread.service.port
        ready.set()

    thread.loop.run_until_complete(start())
    thread.loop.run_forever()
    assert thread.service is not None
    thread.loop.run_until_complete(thread.service.aclose())
    leftover = asyncio.all_tasks(thread.loop)  # e.g. a connection still in aiohttp's lingering read
    for task in leftover:
        task.cancel()
    thread.loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
    thread.loop.close()


@pytest.fixture(scope="module")
def token_service() -> Iterator[ServiceThread]:
    recorder = LogRecorder()
    root = logging.getLogger()
    saved = root.level
    root.addHandler(recorder)
    root.setLevel(logging.DEBUG)
    with tempfile.TemporaryDirectory(prefix="fuzz-") as directory:
        policy = Path(directory) / "policy.yaml"
        policy.write_text(POLICY)
        state = ServiceThread(DevCA.ephemeral("example.org"), ListenerLimits(request_timeout=1.0), logs=recorder)
        ready = threading.Event()
        worker = threading.Thread(target=_run, args=(state, policy, ready), daemon=True)
        worker.start()
        assert ready.wait(20), "token service did not start"
        try:
            yield state
        finally:
            state.loop.call_soon_threadsafe(state.loop.stop)
            worker.join(20)
            root.removeHandler(recorder)
            root.setLevel(saved)


@pytest.fixture(scope="module")
def client_tls(token_service: ServiceThread) -> Iterator[ssl.SSLContext]:
    with tempfile.TemporaryDirectory(prefix="fuzz-client-") as directory:
        yield token_service.client_context(Path(directory))


@dataclass(frozen=True)
class Reply:
    status: int  # 0: the server closed the connection without a response
    head: bytes
    body: bytes


def send(ctx: ssl.SSLContext, port: int, raw: bytes, timeout: float = 5.0) -> Reply:
    """One request on a fresh mTLS connection; the first response (or status 0 if the server just closed)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=timeout) as plain,
        ctx.wrap_socket(plain) as tls,
    ):
        # The server may answer (e.g. 400 on a malformed head) and close before the rest is sent: read its answer.
        with contextlib.suppress(ssl.SSLEOFError, BrokenPipeError, ConnectionResetError):
            tls.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
            try:
                chunk = tls.recv(65536)
            except (ssl.SSLEOFError, ConnectionResetError):
                chunk = b""  # closed without close_notify after its answer: what arrived is the reply
            if not chunk:
                break
            data += chunk
    if not data:
        return Reply(0, b"", b"")
    head, _, body = data.partition(b"\r\n\r\n")
    return Reply(int(head.split(b" ", 2)[1]), head, body)


def _expected_length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value.strip())
    return len(data) + 1  # no length: read until the server closes
