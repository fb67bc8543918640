"""An aiohttp connector that authenticates the server's SPIFFE ID *before* any request byte is sent.

``broker.identity.spiffetls.context.client_ssl_context`` verifies the server's chain during the handshake but cannot
check the SPIFFE ID there (Python's ``ssl`` has no verify callback). Checking it on the response would be too late
for a client that sends a secret in the request (the sidecar sends a JWT-SVID; ``spiffe-broker call`` an access
token), and is often impossible anyway: aiohttp releases the connection of a fully received small response before
the caller sees it (``response.connection`` is then None). So this connector runs
:meth:`SourceSSLContext.check_peer` (X509-SVID §5 per-trust-domain validation and the expected server ID) right
after each new connection's handshake, and closes the connection if it fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import aiohttp
from aiohttp.client_proto import ResponseHandler

from broker.errors import BrokerError, NetworkError
from broker.identity.errors import IdentityError
from broker.identity.spiffetls.context import SourceSSLContext

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace

__all__ = ["NETWORK_ERRORS", "ServerIdentityError", "SpiffeTLSConnector", "map_network_errors"]

# What an aiohttp client call raises when the peer cannot be reached or breaks the exchange: the one list.
NETWORK_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, TimeoutError, OSError)


@contextlib.contextmanager
def map_network_errors(translate: Callable[[Exception], BrokerError]) -> Iterator[None]:
    """The one seam where lower-layer network failures become the caller's :class:`BrokerError` (httpx's
    ``map_exceptions``): ``translate`` words it for the caller. :class:`ServerIdentityError` is one of them (it is
    also an ``aiohttp.ClientError``); other broker errors raised inside pass through."""
    try:
        yield
    except NETWORK_ERRORS as exc:
        raise translate(exc) from None


class ServerIdentityError(NetworkError, aiohttp.ClientError):
    """The server's certificate is not an X509-SVID of the expected SPIFFE ID (the connection was closed)."""


class SpiffeTLSConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` over a :class:`SourceSSLContext` that checks the peer on every new connection."""

    def __init__(self, ssl_context: SourceSSLContext, *, limit: int = 100, keepalive_timeout: float = 15.0) -> None:
        super().__init__(ssl=ssl_context, limit=limit, keepalive_timeout=keepalive_timeout)
        self._spiffe_context = ssl_context

    async def _create_connection(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> ResponseHandler:
        protocol = await super()._create_connection(req, traces, timeout)
        transport = protocol.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        try:
            if ssl_object is None:
                raise ServerIdentityError("connection is not TLS")
            self._spiffe_context.check_peer(ssl_object)
        except IdentityError as exc:
            protocol.abort()  # no TLS close_notify to a peer we do not trust; the socket closes at once
            raise ServerIdentityError(f"server identity rejected: {exc.description}") from None
        except ServerIdentityError:
            protocol.abort()  # no TLS close_notify to a peer we do not trust; the socket closes at once
            raise
        return protocol
