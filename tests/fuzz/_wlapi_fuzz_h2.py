"""A raw HTTP/2 client over a Unix socket for fuzzing gRPC servers: it sends what it is told, checked or not.

``exchange`` opens one connection, sends one request (headers as given, header validation off, an optional
body split into frames that fit), and reads until the stream ends, is reset, the connection ends, or (for a
server stream) the first message arrives. Everything is bounded by ``timeout``.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GRPC_CODES = range(17)  # grpc/doc/statuscodes.md: OK (0) to UNAUTHENTICATED (16)


@dataclass
class Outcome:
    """What came back for one request."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytes = b""
    reset: int | None = None
    goaway: int | None = None
    closed: bool = False
    timed_out: bool = False
    protocol_error: str = ""

    @property
    def grpc_status(self) -> int | None:
        raw = self.trailers.get(b"grpc-status", self.headers.get(b"grpc-status"))
        return int(raw) if raw is not None and raw.isdigit() else None

    @property
    def grpc_message(self) -> str:
        return self.trailers.get(b"grpc-message", self.headers.get(b"grpc-message", b"")).decode("latin-1")

    @property
    def http_status(self) -> int | None:
        raw = self.headers.get(b":status")
        return int(raw) if raw is not None and raw.isdigit() else None

    @property
    def answered(self) -> bool:
        """The server said something about the request: a response, a reset, or a GOAWAY."""
        return bool(self.headers) or self.reset is not None or self.goaway is not None


def grpc_frame(payload: bytes, *, compressed: bool = False, length: int | None = None) -> bytes:
    """gRPC length-prefixed message (PROTOCOL-HTTP2.md): flag byte, 4-byte big-endian length, payload."""
    return struct.pack(">BI", int(compressed), len(payload) if length is None else length) + payload


def request_headers(method: str, *extra: tuple[str, str], metadata: bool = True) -> list[tuple[str, str]]:
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", f"/SpiffeWorkloadAPI/{method}"),
        (":authority", "localhost"),
        ("content-type", "application/grpc+proto"),
        ("te", "trailers"),
    ]
    if metadata:
        headers.append(("workload.spiffe.io", "true"))
    return headers + list(extra)


def send_raw(path: str, data: bytes, *, timeout: float = 1.0) -> bytes:
    """Write raw bytes, half-close, and read whatever comes back until EOF or ``timeout``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b""  # the server closed first: fine
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            received += chunk
        return received


def exchange(
    path: str,
    headers: list[tuple[str, str]] | list[tuple[bytes, bytes]],
    body: bytes | None,
    *,
    streaming: bool = False,
    end_stream: bool = True,
    timeout: float = 3.0,
) -> Outcome:
    """One request on a fresh connection; see the module docstring."""
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False, header_encoding=None
    )
    conn = h2.connection.H2Connection(config=config)
    outcome = Outcome()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        conn.initiate_connection()
        try:
            conn.send_headers(1, headers, end_stream=body is None and end_stream)
            if body is not None:
                _send_body(conn, body, end_stream)
            sock.sendall(conn.data_to_send())
        except (h2.exceptions.H2Error, OSError) as exc:
            outcome.protocol_error = f"send: {exc!r}"
            return outcome
        _read(sock, conn, outcome, streaming, time.monotonic() + timeout)
    return outcome


def _send_body(conn: h2.connection.H2Connection, body: bytes, end_stream: bool) -> None:
    size = conn.max_outbound_frame_size
    chunks = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    for index, chunk in enumerate(chunks):
        conn.send_data(1, chunk, end_stream=end_stream and index == len(chunks) - 1)


def _read(
    sock: socket.socket, conn: h2.connection.H2Connection, outcome: Outcome, streaming: bool, deadline: float
) -> None:
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:
            outcome.closed = True
            return
        if not chunk:
            outcome.closed = True
            return
        try:
            events = conn.receive_data(chunk)
        except h2.exceptions.ProtocolError as exc:
            outcome.protocol_error = f"receive: {exc!r}"
            return
        if _apply(conn, events, outcome, streaming):
            with_pending = conn.data_to_send()
            if with_pending:
                sock.sendall(with_pending)
            return
        pending = conn.data_to_send()
        if pending:
            sock.sendall(pending)
    outcome.timed_out = True


def _apply(conn: h2.connection.H2Connection, events: list[h2.events.Event], outcome: Outcome, streaming: bool) -> bool:
    """Record events; True once the exchange is over."""
    for event in events:
        if isinstance(event, h2.events.ResponseReceived):
            outcome.headers = {bytes(k): bytes(v) for k, v in event.headers}
        elif isinstance(event, h2.events.TrailersReceived):
            outcome.trailers = {bytes(k): bytes(v) for k, v in event.headers}
        elif isinstance(event, h2.events.DataReceived):
            outcome.data += event.data
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if streaming and len(outcome.data) >= 5:
                return True
        elif isinstance(event, h2.events.StreamEnded):
            return True
        elif isinstance(event, h2.events.StreamReset):
            outcome.reset = event.error_code
            return True
        elif isinstance(event, h2.events.ConnectionTerminated):
            outcome.goaway = event.error_code
            return True
    return False
