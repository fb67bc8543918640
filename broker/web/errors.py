"""The one error renderer's aiohttp side: any exception leaving a handler becomes an RFC 6749 §5.2 JSON response.

The body and headers come from :mod:`broker.oauth.response` (shared with the ASGI/WSGI verifier middleware).
:func:`error_middleware` (token service) and :func:`render_error` (also the sidecar's ``/v1/token``) render:

* :class:`~broker.errors.OAuthError`: its own ``error``, ``status``, ``description`` and headers
  (``WWW-Authenticate`` for ``invalid_client``).
* Another :class:`~broker.errors.BrokerError` (identity, configuration): ``temporarily_unavailable`` (503) if it
  says so (no SVID yet), else ``server_error`` (500); the description stays in the log.
* aiohttp's HTTP errors (404, 405 with ``Allow``, 413): their status with an ``invalid_request`` body.
* A client that went away (a ``ConnectionError`` while its connection is closed or closing, e.g. it
  disconnected while sending its body): no response and a DEBUG line; the connection handler
  (:mod:`broker.web.protocol`) drops the connection without an access-log line. A vanished client is not a
  server error.
* Anything else, a ``ConnectionError`` on a live connection included (an outbound call of the handler refused):
  ``server_error`` (500) with no details; the log gets the exception type and traceback but not its message,
  which might quote input.

Every error response carries ``Cache-Control: no-store`` and ``Pragma: no-cache`` (RFC 6749 §5.1).
:func:`error_response` is the sidecar's plain answer for probes and routing (``not_ready``, ``not_found``,
``method_not_allowed``): ``Content-Type: application/json`` and ``Cache-Control: no-store`` only.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable

from aiohttp import web

from broker.errors import BrokerError, OAuthError, ServerError
from broker.oauth.response import NO_STORE, error_document, error_json, public_error
from broker.web.access_log import route_of
from broker.web.metrics import OUTCOME_KEY
from broker.web.protocol import client_gone

__all__ = ["NO_STORE", "answer_failure", "error_middleware", "error_response", "render_error"]

log = logging.getLogger(__name__)

_PLAIN_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def render_error(exc: BrokerError) -> web.Response:
    """Render ``exc`` as ``{"error", "error_description"}`` with its status and headers."""
    exc = public_error(exc)
    return web.json_response(
        error_document(exc.error, exc.description), status=exc.status, headers={**NO_STORE, **exc.headers}
    )


def error_response(status: int, error: str, description: str = "") -> web.Response:
    """A plain ``{"error", "error_description"}`` answer with ``status`` (no ``Pragma``, no charset)."""
    return web.Response(status=status, body=error_json(error, description), headers=_PLAIN_HEADERS)


def _render_http_error(exc: web.HTTPException) -> web.Response:
    description = exc.reason or "request refused"
    headers = {**NO_STORE}
    if "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    return web.json_response(error_document("invalid_request", description), status=exc.status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into an OAuth error response (see the module docstring)."""
    try:
        return await handler(request)
    except Exception as exc:
        answer = answer_failure(request, exc)
        if answer is None:
            raise
        return answer


def answer_failure(request: web.Request, exc: Exception) -> web.Response | None:
    """The response for ``exc`` raised by ``request``'s handler, or None: re-raise it (a redirect-class aiohttp
    exception, or the client went away). Logs as the module docstring says."""
    if isinstance(exc, OAuthError):
        log.info("%s %s refused: %s (%s)", request.method, route_of(request), exc.error, exc.detail)
        return _answered(request, exc)
    if isinstance(exc, BrokerError):
        log.warning("%s %s failed: %s (%s)", request.method, route_of(request), type(exc).__name__, exc.detail)
        return _answered(request, exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        request[OUTCOME_KEY] = "invalid_request"
        return _render_http_error(exc)
    if isinstance(exc, ConnectionError) and client_gone(request):
        log.debug("%s %s: client went away (%s)", request.method, route_of(request), type(exc).__name__)
        return None
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("%s %s: unexpected %s\n%s", request.method, route_of(request), type(exc).__name__, frames)
    return _answered(request, ServerError())


def _answered(request: web.Request, exc: BrokerError) -> web.Response:
    """``exc`` rendered; its wire code noted for the request metrics (:data:`~broker.web.metrics.OUTCOME_KEY`)."""
    request[OUTCOME_KEY] = public_error(exc).error
    return render_error(exc)
