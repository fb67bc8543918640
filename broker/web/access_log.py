"""An access log that holds no request bytes: method, route template, status and time.

aiohttp's default line quotes the request line (path and query string), the Referer and the User-Agent: all
client-chosen bytes that may carry a token a client misplaced. Here a request is named by the *route* it matched
(``/token``), so nothing the client wrote reaches the log. Successful probes (``/healthz``, ``/readyz``, RFC 8414
metadata fetched by every sidecar) go to DEBUG: at a thousand pods they would drown the INFO lines.

Each line carries the request's id (:mod:`broker.web.request_id`) and, for the JSON log format, the fields
``peer``, ``method``, ``route``, ``status`` and ``duration_ms``.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from broker.web.request_id import REQUEST_ID_KEY

__all__ = ["PROBE_ROUTES", "RouteAccessLogger", "method_of", "route_of"]

PROBE_ROUTES = frozenset({"/healthz", "/readyz", "/.well-known/oauth-authorization-server"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(request: BaseRequest) -> str:
    """The matched route's template, or ``-`` (no route, or a request the parser refused)."""
    # Request.match_info asserts it is set; a request the parser refused never had one (aiohttp 3.14).
    match_info: web.UrlMappingMatchInfo | None = getattr(request, "_match_info", None)
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else "-"


def method_of(request: BaseRequest) -> str:
    """The request's method if it is a standard one, else ``OTHER`` (a made-up method is client bytes)."""
    return request.method if request.method in _METHODS else "OTHER"


class RouteAccessLogger(AbstractAccessLogger):
    """``<peer> <METHOD> <route> <status> <ms>``; an unknown method is logged as ``OTHER``."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        route = route_of(request)
        method = method_of(request)
        level = logging.DEBUG if route in PROBE_ROUTES and response.status < 400 else logging.INFO
        if not self.logger.isEnabledFor(level):
            return
        duration_ms = round(time * 1000, 1)
        fields = {"peer": request.remote, "method": method, "route": route, "status": response.status,
                  "duration_ms": duration_ms, "request_id": request.get(REQUEST_ID_KEY)}  # fmt: skip
        self.logger.log(level, "%s %s %s %d %.1fms", request.remote, method, route, response.status, duration_ms,
                        extra=fields)  # fmt: skip
