"""The request id of each request: the peer's ``X-Request-Id`` if well formed, else a new one (:mod:`broker._logging`).

:func:`request_id_middleware` sets :data:`~broker._logging.REQUEST_ID` for the handler (and every task it starts,
which copies the context), keeps it on the request as :data:`REQUEST_ID_KEY` for the access log, and echoes it in
the response's ``X-Request-Id``. A sidecar sends the id of the app's request (or of its own background refresh)
to the token service, so one request shows under one id in both processes' logs.
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
    request_id = adopt_request_id(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID_KEY] = request_id
    token = REQUEST_ID.set(request_id)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        REQUEST_ID.reset(token)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response
