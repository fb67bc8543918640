"""An aiohttp client session over mTLS with the source's X.509-SVID, replaced when the SVID's certificate rotates.

Pooled keep-alive connections keep presenting the certificate they were opened with: after a rotation they would
authenticate the workload with its previous certificate (and a token bound to the new one would not match). So
the session is opened on first use, retired as soon as the source reports another certificate (or when a caller
sees a sign of the old one, :meth:`SvidSession.retire`), and closed in the background; :meth:`SvidSession.aclose`
waits for every close. The server is authenticated by ``server_id`` on every new connection
(:class:`~broker.identity.spiffetls.connector.SpiffeTLSConnector`). The sidecar's token exchange and its egress
proxy's API-key client both talk to the token service through one of these.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from broker.identity.source import X509ContextSource, current_x5t
from broker.identity.spiffetls.connector import SpiffeTLSConnector
from broker.identity.spiffetls.context import ServerIdMatcher, SourceSSLContext, client_ssl_context

__all__ = ["SvidSession"]


@dataclass
class _Open:
    context: SourceSSLContext
    http: aiohttp.ClientSession = field(repr=False)


class SvidSession:
    """See the module docstring; ``timeout``: each request's total time, in seconds."""

    def __init__(self, source: X509ContextSource, server_id: ServerIdMatcher | None, timeout: float) -> None:
        self._source = source
        self._server_id = server_id
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._open: _Open | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._x5t = current_x5t(source)
        self._unsubscribe: Callable[[], None] | None = source.subscribe(self._on_source_change)

    def get(self) -> aiohttp.ClientSession:
        """The current session, opened on first use (after a rotation: with the new certificate)."""
        if self._open is None:
            context = client_ssl_context(self._source, server_id=self._server_id)
            http = aiohttp.ClientSession(connector=SpiffeTLSConnector(context), timeout=self._timeout)
            self._open = _Open(context, http)
        return self._open.http

    def retire(self) -> None:
        """Stop using the current session; it closes in the background (requests under way finish first)."""
        opened, self._open = self._open, None
        if opened is None:
            return
        opened.context.detach()
        task = asyncio.get_running_loop().create_task(opened.http.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Stop following the source, retire the session and wait until every retired one is closed."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.retire()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _on_source_change(self) -> None:
        x5t = current_x5t(self._source)
        if x5t != self._x5t:
            self._x5t = x5t
            self.retire()  # pooled connections present the old certificate
