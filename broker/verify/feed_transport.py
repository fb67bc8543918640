"""The revocation feed follower's one network seam: open a streaming ``GET``, read its status, headers and chunks.

:class:`MtlsFeedOpener` is the real one: aiohttp over mTLS with the workload's X.509-SVID, the server's SPIFFE ID
checked right after the handshake, before the request is sent
(:class:`~broker.identity.spiffetls.connector.SpiffeTLSConnector`). The client context re-loads a rotated SVID in
place, so the next connection presents it; the broker closes a stream when the certificate it was opened with
expires. Tests swap in another :data:`FeedOpener`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import aiohttp

from broker.errors import NetworkError
from broker.identity.source import X509ContextSource
from broker.identity.spiffetls.connector import ServerIdentityError, SpiffeTLSConnector, map_network_errors
from broker.identity.spiffetls.context import ServerIdMatcher, SourceSSLContext, client_ssl_context

__all__ = ["FeedOpener", "FeedResponse", "FeedRetry", "FeedUnavailableError", "MtlsFeedOpener", "error_code",
           "with_timeout"]  # fmt: skip

CHUNK = 64 * 1024
_ERROR_BODY_LIMIT = 4096
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")


class FeedRetry(Exception):
    """This connection is over (refused, stalled, ended); try again after at least ``retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class FeedUnavailableError(NetworkError):
    """The feed could not be reached or broke the stream; the message is safe to log."""


class FeedResponse(Protocol):
    """An open feed response."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (ends when the server closes the stream)."""
        ...

    async def read_body(self, limit: int) -> bytes:
        """At most ``limit`` bytes of a (refusal's) body."""
        ...


FeedOpener = Callable[[str, Mapping[str, str]], AbstractAsyncContextManager[FeedResponse]]


def _failed(url: str) -> Callable[[Exception], FeedUnavailableError]:
    def translate(exc: Exception) -> FeedUnavailableError:
        what = exc.args[0] if isinstance(exc, ServerIdentityError) and exc.args else type(exc).__name__
        return FeedUnavailableError(f"GET {url}: {what}")

    return translate


class _AiohttpFeedResponse:
    def __init__(self, response: aiohttp.ClientResponse, url: str) -> None:
        self._response = response
        self._url = url

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        with map_network_errors(_failed(self._url)):
            async for chunk in self._response.content.iter_chunked(CHUNK):
                yield chunk

    async def read_body(self, limit: int) -> bytes:
        with map_network_errors(_failed(self._url)):
            return await self._response.content.read(limit)


class MtlsFeedOpener:
    """Opens the feed over mTLS as ``source``'s X.509-SVID, from a server whose SPIFFE ID matches ``server_id``."""

    def __init__(self, *, source: X509ContextSource, server_id: ServerIdMatcher, connect_timeout: float = 10.0):
        self._source = source
        self._server_id = server_id
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout)
        self._context: SourceSSLContext | None = None
        self._session: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def __call__(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[FeedResponse]:
        with map_network_errors(_failed(url)):
            async with self._open().get(url, headers=dict(headers), allow_redirects=False) as response:
                yield _AiohttpFeedResponse(response, url)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._context = client_ssl_context(self._source, server_id=self._server_id)
            connector = SpiffeTLSConnector(self._context, limit=4)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def aclose(self) -> None:
        if self._context is not None:
            self._context.detach()
        if self._session is not None:
            await self._session.close()
        self._session = self._context = None


async def with_timeout(chunks: AsyncIterator[bytes], timeout: float) -> AsyncIterator[bytes]:
    """``chunks``, ending with :class:`FeedRetry` when nothing arrives for ``timeout`` seconds."""
    iterator = aiter(chunks)
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise FeedRetry(f"nothing from the feed for {timeout:g} s") from None
        yield chunk


async def error_code(response: FeedResponse) -> str:
    """The RFC 6749 §5.2 ``error`` code of a refusal, if it has a well-formed one (never its description)."""
    try:
        body = json.loads(await response.read_body(_ERROR_BODY_LIMIT))
    except (ValueError, FeedUnavailableError):
        return ""
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else ""
