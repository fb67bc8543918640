"""The request id of each request: the peer's ``X-Request-Id`` if well formed, else a new one (:mod:`broker._logging`).

:func:`request_id_middleware` sets :data:`~broker._logging.REQUEST_ID` for the handler (and every task it starts,
which copies the context), and keeps it on the request as :data:`REQUEST_ID_KEY` for the access log. A fresh id is
sent back in the response's ``X-Request-Id`` (the caller can quote it); an adopted one is not: the caller has it,
and no byte a client wrote is ever reflected (the rule of :mod:`broker.web.protocol`). A sidecar sends the id of
the app's request (or of its own background refresh) to the token service, so one request shows under one id in
both processes' logs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from broker._logging import REQUEST_ID, REQUEST_ID_HEADER, adopt_request_id

__all__ = ["REQUEST_ID_KEY", "request_id_middleware"]

REQUEST_ID_KEY = web.RequestKey("request_id", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    offered = request.headers.get(REQUEST_ID_HEADER)
    request_id = adopt_request_id(offered)
    request[REQUEST_ID_KEY] = request_id
    fresh = request_id != offered
    token = REQUEST_ID.set(request_id)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if fresh:
            exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        REQUEST_ID.reset(token)
    if fresh and not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response
