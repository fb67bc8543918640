"""Reading a request body with a bound: the token endpoint's form and the admin API's JSON both go through here.

The body is read in chunks and refused (``invalid_request``) as soon as it passes ``max_body`` bytes, so a client
cannot make the server buffer more than that. A chunked body that does not decode is ``invalid_request`` too
(aiohttp reports it as ``RequestPayloadError``); a client that disconnects mid-body raises ``ConnectionError``.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from broker.errors import InvalidRequestError

__all__ = ["read_bounded"]


async def read_bounded(request: web.Request, max_body: int) -> bytes:
    """The whole body, at most ``max_body`` bytes (more: :class:`InvalidRequestError`, nothing more is read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = await request.content.read(max_body + 1 - size)
        except RequestPayloadError:
            raise InvalidRequestError("request body could not be decoded (broken chunked encoding)") from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_body:
            raise InvalidRequestError(f"request body is larger than {max_body} bytes")
        chunks.append(chunk)
