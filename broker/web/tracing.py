"""The token service's SERVER span per request (:mod:`broker.tracing`; only with the ``[otel]`` extra installed).

The span is named ``<METHOD> <route template>`` (never the path: it may carry client bytes), continues the
caller's W3C trace context, and ends with the response's status and the outcome the error renderer noted
(:data:`~broker.web.metrics.OUTCOME_KEY`: ``ok`` or an RFC 6749 error code).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from broker.tracing import server_span
from broker.web.access_log import method_of, route_of
from broker.web.metrics import OUTCOME_KEY

__all__ = ["tracing_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    method, route = method_of(request), route_of(request)
    attributes = {"http.request.method": method, "http.route": route}
    with server_span(f"{method} {route}", request.headers, attributes) as span:
        response = await handler(request)
        if span is not None:
            span.set_attribute("http.response.status_code", response.status)
            span.set_attribute("spiffe_broker.outcome", request.get(OUTCOME_KEY, "ok"))
        return response
