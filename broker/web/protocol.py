"""The HTTP/1.1 connection handler every broker listener uses: aiohttp's ``RequestHandler`` with three changes.

1. **Errors never echo or log request bytes.** aiohttp's parser errors (``BadHttpMessage``, ``LineTooLong``, ...)
   carry the offending bytes in their message; aiohttp sends that message back as the 400 body and logs the
   exception at ERROR. Here the 400 body is a fixed RFC 6749 §5.2-shaped JSON object, the log line names only the
   exception type (at DEBUG: a malformed request is the client's problem), and a 500 logs type and frames only.
   A client that went away is not a server error: DEBUG, and no response or access-log line.
2. **Every request has a deadline** (``ListenerLimits.request_timeout``), from its first byte until its headers
   and body are complete (RFC 9112 §9.5 lets a server close a connection it considers stalled). Slowloris
   clients, whose headers or body never finish arriving, are closed. Idle keep-alive connections, including a
   connection that never sends a byte, close after ``idle_timeout``.
3. **Half-close** (RFC 9293 §3.6; ``shutdown(SHUT_WR)``, ``nc -N``): a peer that sent a complete request and then
   its FIN still gets its response before the connection closes. TLS is unchanged (its close_notify ends the
   session, and asyncio's TLS transport cannot half-close).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from broker.oauth.response import NO_STORE, error_json

if TYPE_CHECKING:
    from aiohttp.web_server import Server

__all__ = ["HardenedRequestHandler", "ListenerLimits", "error_body"]

log = logging.getLogger(__name__)

_MALFORMED = error_json("invalid_request", "malformed HTTP request", compact=True)
_SERVER_ERROR = error_json("server_error", compact=True)


@dataclass(frozen=True, kw_only=True)
class ListenerLimits:
    """Deadlines of one listener, in seconds.

    ``request_timeout``: first byte of a request to the end of its body. ``idle_timeout``: keep-alive, and a
    connection that never sends a byte. ``handshake_timeout``: the TLS handshake (asyncio's default is 60 s).
    """

    request_timeout: float = 10.0
    idle_timeout: float = 60.0
    handshake_timeout: float = 10.0

    def __post_init__(self) -> None:
        if min(self.request_timeout, self.idle_timeout, self.handshake_timeout) <= 0:
            raise ValueError("listener timeouts must be positive")


def error_body(status: int) -> bytes:
    """The fixed body of a connection-level error: nothing from the request in it."""
    return _MALFORMED if status < 500 else _SERVER_ERROR


def client_gone(request: BaseRequest) -> bool:
    """Whether the request's client has disconnected: only then is a ``ConnectionError`` the client's doing.

    A ``ConnectionError`` raised on a live connection (a refused or broken outbound call of the handler) is a
    server error and must be answered and logged as one.
    """
    transport = request.transport
    return transport is None or transport.is_closing()


def _payload_done(payload: StreamReader) -> bool:
    return payload.is_eof() or payload.exception() is not None


class HardenedRequestHandler(RequestHandler):
    """aiohttp's connection handler with fixed error responses, request deadlines and half-close answers."""

    def __init__(self, manager: Server, *, loop: asyncio.AbstractEventLoop, limits: ListenerLimits, **kwargs: Any):
        super().__init__(manager, loop=loop, keepalive_timeout=limits.idle_timeout, **kwargs)
        self._limits = limits
        self._deadline: asyncio.TimerHandle | None = None
        self._awaited: StreamReader | None = None  # the body the current deadline waits for
        self._answered = 0  # responses finished; fewer than aiohttp's _request_count means a request is pending
        self._peer_eof = False

    # -- 1. errors ---------------------------------------------------------------------------------------------

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> StreamResponse:
        """A fixed JSON body for ``status``; ``message`` (aiohttp's text, quoting request bytes) is dropped."""
        if self.transport is None or (isinstance(exc, ConnectionError) and client_gone(request)):
            log.debug("client went away during the request (%s)", type(exc).__name__)
            raise ConnectionResetError("client went away")  # aiohttp drops the connection quietly
        if status >= 500:
            frames = "".join(traceback.format_tb(exc.__traceback__)) if exc is not None else ""
            log.error("request failed: unexpected %s\n%s", type(exc).__name__, frames)
        else:
            log.debug("malformed HTTP request refused with %d (%s)", status, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started: closing the connection")
        response = web.Response(
            status=status, body=error_body(status), content_type="application/json", headers=NO_STORE
        )
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp's own failure reports: the exception's type (and frames if it is not the client's doing)."""
        exc = kwargs.get("exc_info")
        name = type(exc).__name__ if isinstance(exc, BaseException) else "error"
        if isinstance(exc, HttpProcessingError | RequestPayloadError | ConnectionError):
            log.debug("connection closed after a client error (%s)", name)
            return
        frames = "".join(traceback.format_tb(exc.__traceback__)) if isinstance(exc, BaseException) else ""
        log.error("HTTP connection failed: unexpected %s\n%s", name, frames)

    # -- 2. deadlines ------------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if data and (self._deadline is None or (self._awaited is not None and _payload_done(self._awaited))):
            self._arm()
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:
            self._track(self._messages[-1][1] if self._messages else None)

    def _arm(self) -> None:
        self._disarm(self._deadline)
        self._awaited = None
        self._deadline = self._loop.call_later(self._limits.request_timeout, self._expire)

    def _track(self, payload: StreamReader | None) -> None:
        """A request's headers are in: done if it has no body left, else wait for the body under the deadline."""
        if payload is None or _payload_done(payload):
            self._disarm(self._deadline)
            return
        handle = self._deadline
        self._awaited = payload
        payload.on_eof(lambda: self._disarm(handle))

    def _disarm(self, handle: asyncio.TimerHandle | None) -> None:
        if handle is not None and handle is self._deadline:
            handle.cancel()
            self._deadline = None
            self._awaited = None

    def _expire(self) -> None:
        self._deadline = None
        if self._awaited is not None and _payload_done(self._awaited):
            self._awaited = None
            return
        log.debug("request not received within %gs: closing the connection", self._limits.request_timeout)
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm(self._deadline)
        super().connection_lost(exc)

    async def finish_response(
        self, request: BaseRequest, resp: StreamResponse, start_time: float | None
    ) -> tuple[StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered += 1
            if self._peer_eof and self._answered >= self._request_count:
                self.close()

    # -- 3. half-close -----------------------------------------------------------------------------------------

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio.Protocol allows a bool
        """Keep the connection open for the response if a complete request is in; else close it (None)."""
        transport = self.transport
        if transport is None or transport.get_extra_info("sslcontext") is not None:
            return None
        if self._awaited is not None and not _payload_done(self._awaited):
            log.debug("client closed its side before the request body was complete")
            return None
        if self._request_count > self._answered:
            self._peer_eof = True  # answer every request that has arrived, then close (finish_response)
            return True
        return None
