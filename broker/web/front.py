"""The token service's request middlewares folded into one: request metrics, request id, error rendering.

Unfolded, every request went through three middlewares (``request_metrics_middleware`` outermost, then
``request_id_middleware``, then ``error_middleware``): three ``functools.partial`` calls, three coroutines and
three ``try`` blocks per request. :class:`FrontMiddleware` does the same work in the same order in one coroutine:

1. the clock for the request metrics starts (:mod:`broker.web.metrics`);
2. the request id is adopted or made, set in :data:`~broker._logging.REQUEST_ID` and kept on the request
   (:mod:`broker.web.request_id`);
3. the handler runs; any failure becomes the OAuth error response :func:`~broker.web.errors.answer_failure`
   gives, logged under the request's id; a redirect-class aiohttp exception and a client that went away
   propagate, as before;
4. a fresh request id goes on the response (or on a propagating aiohttp exception); the context variable is
   reset;
5. the request is counted with its answer's status (not when the client went away: there was no answer).

:attr:`FrontMiddleware.metrics` is set by the metrics mounter before the app starts (None: metrics off). With a
tracer provider the unfolded chain is used instead (the request span sits between the request id and the error
renderer: :mod:`broker.web.tracing`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from broker._logging import REQUEST_ID, REQUEST_ID_HEADER, adopt_request_id
from broker.web.errors import answer_failure
from broker.web.metrics import HttpMetrics
from broker.web.request_id import REQUEST_ID_KEY

__all__ = ["FRONT", "FrontMiddleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FrontMiddleware:
    """One aiohttp middleware for metrics, request id and errors (see the module docstring)."""

    __middleware_version__ = 1  # aiohttp's mark of a new-style middleware (what @web.middleware sets)

    def __init__(self) -> None:
        self.metrics: HttpMetrics | None = None

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        offered = request.headers.get(REQUEST_ID_HEADER)
        request_id = adopt_request_id(offered)
        request[REQUEST_ID_KEY] = request_id
        fresh = request_id != offered
        token = REQUEST_ID.set(request_id)
        try:
            try:
                response: web.StreamResponse = await handler(request)
            except Exception as exc:
                answer = answer_failure(request, exc)
                if answer is None:
                    raise
                response = answer
        except web.HTTPException as exc:
            if fresh:
                exc.headers[REQUEST_ID_HEADER] = request_id
            self._observe(request, exc.status, started)
            raise
        finally:
            REQUEST_ID.reset(token)
        if fresh and not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        self._observe(request, response.status, started)
        return response

    def _observe(self, request: web.Request, status: int, started: float) -> None:
        metrics = self.metrics
        if metrics is not None:
            metrics.observe(request, status, time.perf_counter() - started)


FRONT = web.AppKey("front_middleware", FrontMiddleware)
