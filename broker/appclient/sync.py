"""A synchronous app client: a bound token from the sidecar, presented over mTLS with the same X.509-SVID.

::

    with SyncAppClient(sidecar_socket="/run/spiffe-broker/token.sock") as client:   # SPIFFE_ENDPOINT_SOCKET set
        response = client.request("GET", "https://api.example.org/orders", audience="https://api.example.org")

The Workload API source runs on a private event loop thread (:class:`~broker._loop.LoopThread`). Each
request takes a snapshot of the current SVID and bundles, asks the sidecar for a token until its ``cnf.x5t#S256``
is that SVID's (waiting at most ``binding_wait`` through a rotation), then connects with a context built from the
snapshot, so the certificate on the wire is the one the token is bound to. The server's SPIFFE ID is checked per
trust domain (X509-SVID §5) and against ``server_id`` before a byte of the request, token included, is sent.
One connection per request: use :meth:`credentials` to plug the pair into a pooled client of your own.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from broker._loop import LoopThread
from broker.appclient.common import (
    RETRY_DELAY,
    AppResponse,
    BindingDeadline,
    SidecarError,
    SidecarToken,
    parse_token_response,
    token_query,
)
from broker.appclient.dpop import STALE_TOKEN, dpop_headers, parse_proof_response, proof_request_body
from broker.appclient.snapshot import SnapshotSource
from broker.config import workload_api_address
from broker.errors import ConfigError
from broker.identity.errors import IdentityError
from broker.identity.spiffetls.connector import ServerIdentityError
from broker.identity.spiffetls.context import ServerIdMatcher, SourceSSLContext, client_ssl_context
from broker.identity.svid import X509Svid
from broker.identity.workloadapi.source import WorkloadApiSvidSource

__all__ = ["SyncAppClient", "dpop_request_headers_sync", "fetch_dpop_proof_sync", "fetch_token_sync"]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _exchange(
    socket_path: str | Path, timeout: float, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    """One request on the sidecar's Unix socket: its status and body; ``unreachable`` if the socket fails."""
    connection = _UnixConnection(str(socket_path), timeout)
    headers = {} if body is None else {"Content-Type": "application/json"}
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise SidecarError("unreachable", f"cannot reach the sidecar at {socket_path}: {exc}", status=0) from None
    finally:
        connection.close()


def fetch_token_sync(
    socket_path: str | Path, audience: str, scope: str | None = None, timeout: float = 10.0
) -> SidecarToken:
    """``GET /v1/token`` on the sidecar's Unix socket (stdlib only)."""
    return parse_token_response(*_exchange(socket_path, timeout, "GET", token_query(audience, scope)))


def fetch_dpop_proof_sync(
    socket_path: str | Path,
    method: str,
    url: str,
    access_token: str | None = None,
    nonce: str | None = None,
    timeout: float = 10.0,
) -> str:
    """``POST /v1/dpop-proof`` on the sidecar's Unix socket (stdlib only): a DPoP proof for ``method url``
    signed with the workload's SVID key, with ``ath`` for ``access_token`` (RFC 9449 §4.2; see
    :mod:`broker.appclient.dpop`)."""
    body = proof_request_body(method, url, access_token, nonce)
    return parse_proof_response(*_exchange(socket_path, timeout, "POST", "/v1/dpop-proof", body))


def dpop_request_headers_sync(
    socket_path: str | Path,
    method: str,
    url: str,
    audience: str,
    scope: str | None = None,
    nonce: str | None = None,
    timeout: float = 10.0,
) -> dict[str, str]:
    """``Authorization: DPoP <token>`` and ``DPoP: <proof>`` for one request (RFC 9449 §7.1): a token from the
    sidecar, then a proof for it; fetched once more if the SVID rotated in between (``stale_token``)."""

    def attempt() -> dict[str, str]:
        token = fetch_token_sync(socket_path, audience, scope, timeout)
        proof = fetch_dpop_proof_sync(socket_path, method, url, token.access_token, nonce, timeout)
        return dpop_headers(token.access_token, proof)

    try:
        return attempt()
    except SidecarError as exc:
        if exc.error != STALE_TOKEN:
            raise
    return attempt()


class _SpiffeHTTPSConnection(http.client.HTTPSConnection):
    """Checks the server's X.509-SVID right after the handshake, before the request is written."""

    def __init__(self, host: str, port: int | None, context: SourceSSLContext, timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._spiffe_context = context

    def connect(self) -> None:
        super().connect()
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            self._spiffe_context.check_peer(self.sock)
        except IdentityError as exc:
            self.sock.close()
            raise ServerIdentityError(f"server identity rejected: {exc.description}") from None


class SyncAppClient:
    """Calls APIs with this workload's X.509-SVID and a token bound to it; a context manager."""

    def __init__(
        self,
        *,
        sidecar_socket: str | Path,
        workload_api: str | None = None,
        server_id: ServerIdMatcher = None,
        timeout: float = 30.0,
        binding_wait: float = 5.0,
    ) -> None:
        self._socket = str(sidecar_socket)
        self._address = workload_api_address(workload_api)
        self._server_id, self._timeout, self._binding_wait = server_id, timeout, binding_wait
        self._loop: LoopThread | None = None
        self._source: WorkloadApiSvidSource | None = None
        self._contexts: dict[str, SourceSSLContext] = {}

    def __enter__(self) -> SyncAppClient:
        self._loop = LoopThread(name="spiffe-broker-appclient")
        try:
            self._source = WorkloadApiSvidSource(address=self._address)
            self._loop.run(self._source.wait_ready(self._timeout), self._timeout + 1.0)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the Workload API streams and the loop thread (idempotent)."""
        loop, source, self._loop, self._source = self._loop, self._source, None, None
        for context in self._contexts.values():
            context.detach()
        self._contexts = {}
        if loop is not None:
            if source is not None:
                loop.run(source.aclose(), 5.0)
            loop.close()

    def x509_svid(self) -> X509Svid:
        """The X.509-SVID this client presents now (its ``spiffe_id``, ``x5t_s256()``)."""
        return self._snapshot().x509_svid()

    def credentials(self, audience: str, scope: str | None = None) -> tuple[SourceSSLContext, SidecarToken]:
        """A TLS client context presenting the current X.509-SVID, and a token bound to exactly that SVID."""
        binding = BindingDeadline(self._binding_wait)
        while True:
            snapshot = self._snapshot()
            token = fetch_token_sync(self._socket, audience, scope, self._timeout)
            if binding.matches(token.access_token, snapshot.x509_svid().x5t_s256()):
                return self._context(snapshot), token
            time.sleep(RETRY_DELAY)  # a rotation in flight: the sidecar catches up within a moment

    def request(
        self,
        method: str,
        url: str,
        *,
        audience: str,
        scope: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> AppResponse:
        """``method url`` with ``Authorization: Bearer <bound token>`` over mTLS; the whole response."""
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ConfigError("URL must be https:// (the token is bound to the TLS client certificate)")
        context, token = self.credentials(audience, scope)
        connection = _SpiffeHTTPSConnection(parts.hostname, parts.port, context, self._timeout)
        target = parts.path or "/"
        try:
            connection.request(
                method,
                target + (f"?{parts.query}" if parts.query else ""),
                body=body,
                headers={**(headers or {}), "Authorization": f"Bearer {token.access_token}"},
            )
            response = connection.getresponse()
            answer = AppResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()
        return answer

    def _snapshot(self) -> SnapshotSource:
        if self._loop is None or self._source is None:
            raise RuntimeError("use SyncAppClient as a context manager (with ...)")
        return self._loop.run(_take_snapshot(self._source), self._timeout)

    def _context(self, snapshot: SnapshotSource) -> SourceSSLContext:
        key = snapshot.key()
        context = self._contexts.get(key)
        if context is None:
            for retired in self._contexts.values():
                retired.detach()  # a snapshot never changes, but a context must not outlive its subscription
            context = client_ssl_context(snapshot, server_id=self._server_id)
            self._contexts = {key: context}  # keep only the newest
        return context


async def _take_snapshot(source: WorkloadApiSvidSource) -> SnapshotSource:
    """Read the source on its own loop (its state is written there)."""
    return SnapshotSource(source.x509_svid(), source.x509_bundles())
