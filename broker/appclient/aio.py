"""An asyncio app client: a bound token from the sidecar, presented over mTLS with the same X.509-SVID.

::

    async with AppClient(sidecar_socket="/run/spiffe-broker/token.sock") as client:   # SPIFFE_ENDPOINT_SOCKET set
        response = await client.request("GET", "https://api.example.org/orders", audience="https://api.example.org")

Keep-alive matters for RFC 8705: a pooled connection keeps presenting the certificate it was opened with, while
the sidecar's token follows the newest SVID. So the client keeps one aiohttp session per SVID, whose TLS context
is built from a snapshot of that SVID (:class:`~broker.appclient.snapshot.SnapshotSource`) and never reloaded: a
token bound to ``x5t`` only ever goes out on a connection presenting that very certificate, even when the SVID
rotates between the token and the connection. After a rotation new requests go through a new session (new
connections, new certificate) and the old session is closed once its requests had ``retire_after`` seconds to
finish. The server's SPIFFE ID is checked on every new connection before
the request is written (:class:`~broker.identity.spiffetls.connector.SpiffeTLSConnector`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import aiohttp

from broker.appclient.common import (
    RETRY_DELAY,
    AppResponse,
    BindingDeadline,
    SidecarError,
    SidecarToken,
    parse_token_response,
    token_query,
)
from broker.appclient.snapshot import SnapshotSource
from broker.config import workload_api_address
from broker.errors import ConfigError
from broker.identity.spiffetls.connector import SpiffeTLSConnector, map_network_errors
from broker.identity.spiffetls.context import ServerIdMatcher, SourceSSLContext, client_ssl_context
from broker.identity.svid import X509Svid
from broker.identity.workloadapi.source import WorkloadApiSvidSource

__all__ = ["AppClient"]


class AppClient:
    """Calls APIs with this workload's X.509-SVID and a token bound to it; an async context manager."""

    def __init__(
        self,
        *,
        sidecar_socket: str | Path,
        workload_api: str | None = None,
        server_id: ServerIdMatcher = None,
        timeout: float = 30.0,
        binding_wait: float = 5.0,
        retire_after: float = 30.0,
    ) -> None:
        self._socket = str(sidecar_socket)
        self._address = workload_api_address(workload_api)
        self._server_id, self._binding_wait, self._retire_after = server_id, binding_wait, retire_after
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._source: WorkloadApiSvidSource | None = None
        self._sidecar: aiohttp.ClientSession | None = None
        self._session: tuple[str, aiohttp.ClientSession, SourceSSLContext] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> AppClient:
        self._source = WorkloadApiSvidSource(address=self._address)
        try:
            await self._source.wait_ready(self._timeout.total)
            connector = aiohttp.UnixConnector(path=self._socket)
            self._sidecar = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the sessions and the Workload API streams (idempotent)."""
        for task in self._retiring:
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        sessions = [self._sidecar, self._session[1] if self._session else None]
        context = self._session[2] if self._session else None
        self._sidecar, self._session = None, None
        for session in sessions:
            if session is not None:
                await session.close()
        if context is not None:
            context.detach()
        if self._source is not None:
            await self._source.aclose()

    def x509_svid(self) -> X509Svid:
        """The X.509-SVID this client presents on new connections (its ``spiffe_id``, ``x5t_s256()``)."""
        return self._require()[0].x509_svid()

    async def token(self, audience: str, scope: str | None = None) -> SidecarToken:
        """A token from the sidecar bound to the X.509-SVID this client presents right now."""
        return (await self._credentials(audience, scope))[1]

    async def _credentials(self, audience: str, scope: str | None) -> tuple[SnapshotSource, SidecarToken]:
        """A snapshot of the current SVID and a token bound to exactly that SVID (RFC 8705 §3)."""
        source, sidecar = self._require()
        binding = BindingDeadline(self._binding_wait)
        while True:
            snapshot = SnapshotSource(source.x509_svid(), source.x509_bundles())
            token = await self._fetch(sidecar, audience, scope)
            if binding.matches(token.access_token, snapshot.x509_svid().x5t_s256()):
                return snapshot, token
            await asyncio.sleep(RETRY_DELAY)  # a rotation in flight: the sidecar catches up within a moment

    async def request(
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
        if not url.startswith("https://"):
            raise ConfigError("URL must be https:// (the token is bound to the TLS client certificate)")
        snapshot, token = await self._credentials(audience, scope)
        session = self._api_session(snapshot)  # presents the very SVID the token is bound to
        all_headers = {**(headers or {}), "Authorization": f"Bearer {token.access_token}"}
        async with session.request(method, url, headers=all_headers, data=body, allow_redirects=False) as response:
            content = await response.read()
            return AppResponse(response.status, {k.lower(): v for k, v in response.headers.items()}, content)

    async def _fetch(self, sidecar: aiohttp.ClientSession, audience: str, scope: str | None) -> SidecarToken:
        def unreachable(exc: Exception) -> SidecarError:
            return SidecarError("unreachable", f"cannot reach the sidecar at {self._socket}: {exc}", status=0)

        with map_network_errors(unreachable):
            async with sidecar.get(f"http://localhost{token_query(audience, scope)}") as response:
                status, raw = response.status, await response.read()
        return parse_token_response(status, raw)

    def _api_session(self, snapshot: SnapshotSource) -> aiohttp.ClientSession:
        """The session whose new connections present ``snapshot``'s SVID, from a context built for it alone."""
        key = snapshot.key()
        if self._session is not None and self._session[0] == key:
            return self._session[1]
        if self._session is not None:
            _, old, old_context = self._session
            task = asyncio.create_task(_close_later(old, self._retire_after, old_context))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        context = client_ssl_context(snapshot, server_id=self._server_id)
        session = aiohttp.ClientSession(connector=SpiffeTLSConnector(context), timeout=self._timeout)
        self._session = (key, session, context)
        return session

    def _require(self) -> tuple[WorkloadApiSvidSource, aiohttp.ClientSession]:
        if self._source is None or self._sidecar is None:
            raise RuntimeError("use AppClient as an async context manager (async with ...)")
        return self._source, self._sidecar


async def _close_later(session: aiohttp.ClientSession, delay: float, context: SourceSSLContext) -> None:
    try:
        await asyncio.sleep(delay)
    finally:
        with contextlib.suppress(Exception):
            await session.close()
        context.detach()
