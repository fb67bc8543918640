"""Fuzzing of the sidecar's HTTP surface over its Unix socket: paths, methods, query strings, headers, bodies.

The sidecar (``start_sidecar`` with the fake token service of ``tests/unit/sidecar/sidecar_helpers.py``) runs
on its own loop in a thread; requests are raw bytes written to the socket, so anything can be sent. Every
request carries a canary; for every input:

* the answer is never a 5xx (bad input is a 4xx; RFC 9110 §15.5), and never echoes the canary;
* nothing is logged with a traceback or at ERROR, and no log line holds the canary or an issued token;
* the sidecar still serves a valid ``/v1/token`` request afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.sidecar.service import RunningSidecar, start_sidecar
from broker.testing import FakeTokenService
from broker.web import ListenerLimits
from tests.unit.sidecar.sidecar_helpers import API, BROKER_ID, WEB_ID, short_tmpdir

CANARY = "CANARY-7f3a9c-sidecar"
FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class SidecarThread:
    """A sidecar with a fake token service, on its own loop in a daemon thread."""

    def __init__(self, directory: Path) -> None:
        self.socket_path = directory / "s.sock"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sidecar-fuzz", daemon=True)
        self._running: RunningSidecar | None = None
        self.fake: FakeTokenService | None = None

    def __enter__(self) -> SidecarThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(15)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._running is not None:
            asyncio.run_coroutine_threadsafe(self._running.aclose(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        self._loop.close()

    async def _start(self) -> None:
        source = InMemorySvidSource(DevCA.ephemeral("example.org"), WEB_ID)
        self.fake = FakeTokenService(source)
        self._running = await start_sidecar(
            source=source,
            token_service_url="https://127.0.0.1:1",
            token_service_id=BROKER_ID,
            socket_path=self.socket_path,
            token_service=self.fake,
            limits=ListenerLimits(request_timeout=2.0, idle_timeout=2.0),
        )


class LogWatch(logging.Handler):
    """Every record from any thread, formatted with its traceback, for the leak and crash checks."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        self.lines.append(text)
        if record.exc_info or record.levelno >= logging.ERROR or "Traceback" in text:
            self.bad.append(text)

    def check(self, *secrets: str) -> None:
        bad, lines = self.bad[:], self.lines[:]
        self.bad.clear()
        self.lines.clear()
        assert bad == [], bad
        for secret in secrets:
            assert not [line for line in lines if secret in line], f"{secret!r} logged"


@pytest.fixture(scope="module")
def sidecar() -> Iterator[SidecarThread]:
    with short_tmpdir() as directory, SidecarThread(directory) as running:
        yield running


@pytest.fixture
def logs() -> Iterator[LogWatch]:
    watch = LogWatch()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(watch)
    root.setLevel(logging.DEBUG)
    try:
        yield watch
    finally:
        root.removeHandler(watch)
        root.setLevel(previous)


def send(path: Path, data: bytes, *, timeout: float = 3.0) -> bytes:
    """Write ``data`` and read until the server closes or ``timeout``; a reset counts as an answer so far."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        received = b""
        try:
            sock.sendall(data)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass
        return received


def status_of(reply: bytes) -> int | None:
    head = reply.split(b"\r\n", 1)[0].split(b" ")
    return int(head[1]) if len(head) > 1 and head[0].startswith(b"HTTP/") and head[1].isdigit() else None


def assert_no_server_error(reply: bytes) -> None:
    status = status_of(reply)
    assert status is None or status < 500, reply[:300]
    assert CANARY.encode() not in reply, f"the canary came back: {reply[:300]!r}"


def valid_token(sidecar: SidecarThread) -> str:
    request = f"GET /v1/token?audience={API} HTTP/1.1\r\nHost: sc\r\nConnection: close\r\n\r\n"
    reply = send(sidecar.socket_path, request.encode())
    assert status_of(reply) == 200, reply
    return str(json.loads(reply.split(b"\r\n\r\n", 1)[1])["access_token"])


def test_the_checks_catch_a_5xx_an_echo_and_a_logged_secret(logs: LogWatch) -> None:
    """Self-check: the invariants are not vacuous."""
    with pytest.raises(AssertionError):
        assert_no_server_error(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    with pytest.raises(AssertionError, match="canary"):
        assert_no_server_error(b"HTTP/1.1 400 Bad Request\r\n\r\n" + CANARY.encode())
    logging.getLogger("aiohttp.server").debug("got %s", CANARY)
    with pytest.raises(AssertionError, match="logged"):
        logs.check(CANARY)


def test_a_valid_token_request_is_served(sidecar: SidecarThread, logs: LogWatch) -> None:
    token = valid_token(sidecar)
    logs.check(CANARY, token)


_C = CANARY
HAND_WRITTEN: list[Any] = [
    pytest.param(f"GET /v1/token?audience={_C}&audience={_C} HTTP/1.1\r\n\r\n", id="repeated-audience"),
    pytest.param(f"GET /v1/token?audience=a&scope={_C}&scope=x HTTP/1.1\r\n\r\n", id="repeated-scope"),
    pytest.param(f"GET /v1/token?audience=%00{_C}%ff HTTP/1.1\r\n\r\n", id="nul-and-ff-in-audience"),
    pytest.param(f"GET /v1/token?audience=%zz{_C} HTTP/1.1\r\n\r\n", id="bad-percent-escape"),
    pytest.param(f"GET /v1/token?audience={'a' * 3000}{_C} HTTP/1.1\r\n\r\n", id="long-audience"),
    pytest.param(f"GET /v1/token?audience=a&scope={'s ' * 2000}{_C} HTTP/1.1\r\n\r\n", id="long-scope"),
    pytest.param(f"GET /v1/token?{_C}={'x' * 9000} HTTP/1.1\r\n\r\n", id="nine-k-query"),
    pytest.param(f"GET /{'a' * 20000}{_C} HTTP/1.1\r\n\r\n", id="twenty-k-path"),
    pytest.param(f"GET /v1/token?audience=a HTTP/1.1\r\nAuthorization: Bearer {_C}\r\n\r\n", id="authorization"),
    pytest.param(f"GET /v1/token?audience=a HTTP/1.1\r\nDPoP: {_C}.{_C}.{_C}\r\n\r\n", id="dpop"),
    pytest.param(f"GET /v1/token?audience=a HTTP/1.1\r\nX-{_C}: {'v' * 20000}\r\n\r\n", id="twenty-k-header"),
    pytest.param(f"GET /v1/token HTTP/1.1\r\n{_C}\r\n\r\n", id="header-without-colon"),
    pytest.param(f"GET /v1/token HTTP/1.1\r\nHost: a\r\n folded {_C}\r\n\r\n", id="obsolete-line-folding"),
    pytest.param(f"GET /v1/token?{_C} HTTP/9.9\r\n\r\n", id="http-9.9"),
    pytest.param(f"G\x00T /{_C} HTTP/1.1\r\n\r\n", id="nul-in-method"),
    pytest.param(f"{_C} / HTTP/1.1\r\n\r\n", id="unknown-method"),
    pytest.param(f"GET {_C}\r\n\r\n", id="http-0.9-style"),
    pytest.param(f"\x16\x03\x01\x02\x00{_C}\r\n\r\n", id="tls-client-hello"),
    pytest.param(f"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n{_C}", id="http2-preface"),
    pytest.param(f"POST /v1/token HTTP/1.1\r\nContent-Length: 10\r\n\r\n{_C}", id="body-longer-than-length"),
    pytest.param(f"POST /v1/token HTTP/1.1\r\nContent-Length: -1\r\n\r\n{_C}", id="negative-content-length"),
    pytest.param(f"POST /v1/token HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{_C}", id="two-lengths"),
    pytest.param(
        f"POST /v1/token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{_C}\r\n0\r\n\r\n", id="bad-chunk"
    ),
    pytest.param(f"POST /v1/token HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{_C}", id="te-gzip"),
    pytest.param(
        f"POST /v1/token HTTP/1.1\r\nContent-Encoding: deflate\r\nContent-Length: {len(_C)}\r\n\r\n{_C}",
        id="deflate-body",
    ),
    pytest.param(f"GET /v1/token?audience=a HTTP/1.1\r\nHost: {_C}\r\nOrigin: http://{_C}\r\n\r\n", id="origin"),
    pytest.param(
        f"GET /v1/token?audience=a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n{_C}", id="expect"
    ),
    pytest.param(
        f"GET /v1/token?audience=a HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n{_C}", id="upgrade"
    ),
]


@pytest.mark.parametrize("request_text", HAND_WRITTEN)
def test_malformed_request_is_never_a_5xx_echo_or_logged(
    sidecar: SidecarThread, logs: LogWatch, request_text: str
) -> None:
    if "\r\nHost:" not in request_text:  # RFC 9112 §3.2: without Host every HTTP/1.1 request is a 400 anyway
        request_text = request_text.replace("\r\n", "\r\nHost: sc\r\n", 1)
    reply = send(sidecar.socket_path, request_text.encode("latin-1"))
    assert_no_server_error(reply)
    logs.check(CANARY)
    logs.check(CANARY, valid_token(sidecar))


_TOKEN = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="%&#="), max_size=30)
_ODD = st.sampled_from(["%00", "%ff", "%zz", "%", "+", "%20", " ", "a b", "\x7f"])
_QUERY_VALUE = st.one_of(_TOKEN, _ODD, st.binary(max_size=12).map(lambda b: b.decode("latin-1")))


_PATHS = ["/v1/token", "/readyz", "/healthz", "/v1/status", "/", "//v1/token", "/v1/token/", "*", "/v1/%74oken"]
_HEADERS = [
    "Host",
    "Authorization",
    "DPoP",
    "Content-Type",
    "Content-Length",
    "Transfer-Encoding",
    "Cookie",
    "Origin",
    _C,
]


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "get", "G ET", "\x00"]))
    path = draw(st.sampled_from(_PATHS) | _TOKEN.map(lambda t: "/" + t))
    pairs = draw(st.lists(st.tuples(st.sampled_from(["audience", "scope", "x", "", _C]), _QUERY_VALUE), max_size=4))
    query = "&".join(f"{k}={v}" for k, v in pairs) + draw(st.sampled_from(["", f"&{_C}", f"&scope={_C}"]))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/1.1 x"]))
    header_names = st.sampled_from(_HEADERS)
    headers = draw(st.lists(st.tuples(header_names, _QUERY_VALUE | st.just(_C)), max_size=5))
    body = draw(st.binary(max_size=64)) + _C.encode() if draw(st.booleans()) else b""
    lines = [f"{method} {path}?{query} {version}"]
    lines += [f"{n}: {v}" for n, v in headers if n not in ("Content-Length", "Transfer-Encoding")]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    if draw(st.integers(0, 9)):  # mostly with a Host, so that most requests get past RFC 9112 §3.2
        lines.insert(1, "Host: sc")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


@FUZZ
@given(request=requests())
def test_generated_requests_are_never_a_5xx_echo_or_logged(
    sidecar: SidecarThread, logs: LogWatch, request: bytes
) -> None:
    assert_no_server_error(send(sidecar.socket_path, request))
    logs.check(CANARY)


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_are_never_a_5xx_or_logged(sidecar: SidecarThread, logs: LogWatch, data: bytes) -> None:
    assert_no_server_error(send(sidecar.socket_path, data + CANARY.encode() + b"\r\n\r\n", timeout=1.0))
    logs.check(CANARY)


def test_sidecar_still_serves_after_the_fuzzing(sidecar: SidecarThread, logs: LogWatch) -> None:
    logs.check(CANARY, valid_token(sidecar))
