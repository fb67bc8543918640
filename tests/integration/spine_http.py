"""Small HTTP clients for the integration tests: over the sidecar's Unix socket, and HTTPS with SVID files."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.integration.spine import SvidFiles


def jwt_part(token: str, index: int) -> dict[str, Any]:
    """Header (0) or payload (1) of a compact JWS, decoded without verification (tests only)."""
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


# -- processes ------------------------------------------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("sidecar", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = field(repr=False)

    def json(self) -> Any:
        return json.loads(self.body)


def _exchange(
    conn: http.client.HTTPConnection, method: str, path: str, body: str | None, headers: dict[str, str]
) -> Reply:
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def unix_get(socket_path: Path, path: str, *, timeout: float = 10.0) -> Reply:
    return _exchange(_UnixConnection(socket_path, timeout), "GET", path, None, {})


def tls_context(bundle: Path, client: SvidFiles | None) -> ssl.SSLContext:
    """Verifies the server against the SPIRE bundle (by chain; SPIFFE IDs are not host names)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=str(bundle))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def https_request(
    url_port: int, method: str, path: str, *, context: ssl.SSLContext, body: str | None = None, headers: dict[str, str]
) -> Reply:
    conn = http.client.HTTPSConnection("127.0.0.1", url_port, context=context, timeout=10)
    return _exchange(conn, method, path, body, headers)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_ok(port: int, path: str) -> bool:
    try:
        return _exchange(http.client.HTTPConnection("127.0.0.1", port, timeout=2), "GET", path, None, {}).status == 200
    except OSError:
        return False


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False
