"""An asyncio app client: a bound token from the sidecar, presented over mTLS with the same X.509-SVID.

::

    async with AppClient(sidecar_socket="/run/spiffe-broker/token.sock") as client:   # SPIFFE_ENDPOINT_SOCKET set
        response = await client.request("GET", "https://api.example.org/orders", audience="https://api.example.org")

Keep-alive matters for RFC 8705: a pooled connection keeps presenting the certificate it was opened with, while
the sidecar's token follows the newest SVID. So the client keeps one aiohttp session per SVID: after a rotation
new requests go through a new session (new connections, new certificate) and the old session is closed once its
requests had ``retire_after`` seconds to finish. The server's SPIFFE ID is checked on every new connection before
the request is written (:class:`~broker.verify.connector.SpiffeTLSConnector`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import aiohttp

from broker.appclient.common import (
    AppResponse,
    SidecarError,
    SidecarToken,
    mismatch,
    parse_token_response,
    token_binding,
    token_query,
)
from broker.config import workload_api_address
from broker.errors import ConfigError
from broker.identity.svid import X509Svid
from broker.identity.tls import ServerIdMatcher, SourceSSLContext, client_ssl_context
from broker.identity.workload_source import WorkloadApiSvidSource
from broker.verify.connector import SpiffeTLSConnector

__all__ = ["AppClient"]

_RETRY_DELAY = 0.1


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
        self._context: SourceSSLContext | None = None
        self._sidecar: aiohttp.ClientSession | None = None
        self._session: tuple[str, aiohttp.ClientSession] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> AppClient:
        self._source = WorkloadApiSvidSource(address=self._address)
        try:
            await self._source.wait_ready(self._timeout.total)
            self._context = client_ssl_context(self._source, server_id=self._server_id)
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
        self._sidecar, self._session = None, None
        for session in sessions:
            if session is not None:
                await session.close()
        if self._context is not None:
            self._context.detach()
        if self._source is not None:
            await self._source.aclose()

    def x509_svid(self) -> X509Svid:
        """The X.509-SVID this client presents on new connections (its ``spiffe_id``, ``x5t_s256()``)."""
        return self._require()[0].x509_svid()

    async def token(self, audience: str, scope: str | None = None) -> SidecarToken:
        """A token from the sidecar bound to the X.509-SVID this client presents right now."""
        source, sidecar = self._require()
        deadline = time.monotonic() + self._binding_wait
        while True:
            token = await self._fetch(sidecar, audience, scope)
            bound = token_binding(token.access_token)
            if bound == source.x509_svid().x5t_s256():
                return token
            if time.monotonic() >= deadline:
                raise mismatch(bound)
            await asyncio.sleep(_RETRY_DELAY)  # a rotation in flight: the sidecar catches up within a moment

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
        token = await self.token(audience, scope)
        session = self._api_session(token_binding(token.access_token) or "")
        all_headers = {**(headers or {}), "Authorization": f"Bearer {token.access_token}"}
        async with session.request(method, url, headers=all_headers, data=body, allow_redirects=False) as response:
            content = await response.read()
            return AppResponse(response.status, {k.lower(): v for k, v in response.headers.items()}, content)

    async def _fetch(self, sidecar: aiohttp.ClientSession, audience: str, scope: str | None) -> SidecarToken:
        try:
            async with sidecar.get(f"http://localhost{token_query(audience, scope)}") as response:
                status, raw = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SidecarError("unreachable", f"cannot reach the sidecar at {self._socket}: {exc}", status=0) from None
        return parse_token_response(status, raw)

    def _api_session(self, x5t: str) -> aiohttp.ClientSession:
        """The session whose new connections present the SVID with thumbprint ``x5t``."""
        if self._session is not None and self._session[0] == x5t:
            return self._session[1]
        assert self._context is not None
        if self._session is not None:
            task = asyncio.create_task(_close_later(self._session[1], self._retire_after))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        session = aiohttp.ClientSession(connector=SpiffeTLSConnector(self._context), timeout=self._timeout)
        self._session = (x5t, session)
        return session

    def _require(self) -> tuple[WorkloadApiSvidSource, aiohttp.ClientSession]:
        if self._source is None or self._sidecar is None:
            raise RuntimeError("use AppClient as an async context manager (async with ...)")
        return self._source, self._sidecar


async def _close_later(session: aiohttp.ClientSession, delay: float) -> None:
    try:
        await asyncio.sleep(delay)
    finally:
        with contextlib.suppress(Exception):
            await session.close()
