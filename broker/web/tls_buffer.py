"""The TLS read buffer of one listener's connections: asyncio's per-connection buffer, sized for that listener.

asyncio's TLS (``asyncio.sslproto.SSLProtocol``, the same code in CPython 3.11 and 3.13) gives every connection a
read buffer of ``SSLProtocol.max_size`` bytes, 256 KiB, allocated and zero-filled when the connection is accepted
and kept until it closes. ``max_size`` bounds two things, and neither needs more than one TLS record:

* the **ciphertext** of one socket read: the selector transport asks ``get_buffer(-1)`` and gets ``max_size``
  bytes for ``recv_into``; the bytes read are copied into the connection's incoming ``ssl.MemoryBIO``, where a
  record that is not complete yet waits for the next read. Any size is correct; a smaller one means more reads
  for a large body, not a different result.
* the **plaintext** chunk of one ``SSLObject.read(max_size)`` for a protocol that is not a ``BufferedProtocol``
  (aiohttp's is not), called in a loop until the BIO is drained; OpenSSL hands out one record's plaintext (at
  most 2^14 bytes) per call on an ordinary connection anyway.

How much ciphertext may wait in the BIO is bounded elsewhere (``FLOW_CONTROL_HIGH_WATER_SSL_READ``, 256 KiB, then
reading pauses), and the write side does not use ``max_size``. So a buffer of one largest record changes no
behaviour and saves about 240 KiB per open connection: most of the token service's memory per revocation-feed
follower (docs/benchmarks.md).

There is no public knob, and ``loop.create_server(ssl=...)`` builds the protocol itself. So :func:`tls_protocol_factory`
does what the loop does there (``_make_ssl_transport``) in a protocol factory for ``create_server`` *without*
``ssl=``: each connection's protocol is an ``SSLProtocol`` subclass whose ``max_size`` is the listener's, wrapping
the application's protocol, with the listener's handshake deadline. Only that listener changes: the class
attribute, other listeners and outgoing connections (``broker.verify``'s clients) keep Python's default.

It returns None, and the listener uses ``ssl=`` with Python's buffer (said once, at DEBUG), when
``SSLProtocol.max_size`` is not an int on this Python, or the loop is not the standard library's: uvloop has its
own TLS protocol in Cython (``sslproto.pyx``: ``SSL_READ_MAX_SIZE``, 256 KiB, ``PyMem_RawMalloc`` without zeroing,
so only the pages a read touched count), not sized here; issue 14 should measure it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from asyncio import sslproto
from collections.abc import Callable

__all__ = [
    "DEFAULT_TLS_READ_BUFFER",
    "MAX_TLS_READ_BUFFER",
    "MIN_TLS_READ_BUFFER",
    "python_tls_read_buffer",
    "tls_protocol_factory",
    "unsupported_reason",
]

log = logging.getLogger(__name__)

DEFAULT_TLS_READ_BUFFER = 17 * 1024
"""One largest record per read: 2^14 bytes of plaintext, at most 256 more in a TLS 1.3 record and its 5-byte
header (RFC 8446 §5.2: 16,645 bytes), rounded up to 17 KiB; TLS 1.2 AEAD records are smaller (RFC 5246 §6.2.3)."""
MIN_TLS_READ_BUFFER = 4096
MAX_TLS_READ_BUFFER = 1024 * 1024

_reported: set[str] = set()


def python_tls_read_buffer() -> int | None:
    """``asyncio.sslproto.SSLProtocol.max_size`` on this Python; None if it has no such int attribute."""
    value = getattr(sslproto.SSLProtocol, "max_size", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def unsupported_reason(loop: asyncio.AbstractEventLoop) -> str | None:
    """Why a listener on ``loop`` cannot size its TLS read buffer; None if it can."""
    if python_tls_read_buffer() is None:
        return "asyncio.sslproto.SSLProtocol has no int max_size on this Python"
    if not isinstance(loop, asyncio.BaseEventLoop):
        return f"the event loop is {type(loop).__module__}.{type(loop).__name__}, not the standard library's"
    return None


def tls_protocol_factory(
    app_factory: Callable[[], asyncio.BaseProtocol],
    ssl_context: ssl.SSLContext,
    *,
    read_buffer: int,
    handshake_timeout: float | None,
    loop: asyncio.AbstractEventLoop,
) -> Callable[[], asyncio.BaseProtocol] | None:
    """A ``create_server`` protocol factory (pass no ``ssl=``) serving ``app_factory``'s protocol over TLS with a
    ``read_buffer``-byte read buffer per connection; None if ``read_buffer`` is 0 (Python's default) or this loop
    or Python cannot (see the module docstring): then pass ``ssl=ssl_context`` as usual."""
    if read_buffer == 0:
        return None
    if not MIN_TLS_READ_BUFFER <= read_buffer <= MAX_TLS_READ_BUFFER:
        raise ValueError(f"a TLS read buffer is 0 or {MIN_TLS_READ_BUFFER}-{MAX_TLS_READ_BUFFER} bytes")
    reason = unsupported_reason(loop)
    if reason is not None:
        _report(reason)
        return None
    protocol = _protocol_class(read_buffer)

    def factory() -> asyncio.BaseProtocol:
        # As BaseSelectorEventLoop._make_ssl_transport does; waiter None: no accept coroutine waits for the
        # handshake here (SSLProtocol checks for None), a failed one closes the socket itself.
        return protocol(
            loop,
            app_factory(),
            ssl_context,
            None,  # type: ignore[arg-type]  # typeshed: Future, CPython also takes None (see above)
            server_side=True,
            ssl_handshake_timeout=handshake_timeout,  # type: ignore[arg-type]  # typeshed says int; a float works
        )

    return factory


@functools.cache
def _protocol_class(read_buffer: int) -> type[sslproto.SSLProtocol]:
    """``SSLProtocol`` with its buffer size (a ``ClassVar``, read as ``self.max_size`` by ``__init__``,
    ``get_buffer`` and the plaintext read): one subclass per size, the standard class untouched."""

    class SizedSSLProtocol(sslproto.SSLProtocol):
        max_size = read_buffer

    SizedSSLProtocol.__qualname__ = f"SSLProtocol{read_buffer}"
    return SizedSSLProtocol


def _report(reason: str) -> None:
    if reason not in _reported:
        _reported.add(reason)
        log.debug("TLS read buffer left at the event loop's default: %s", reason)
