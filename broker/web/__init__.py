"""Shared aiohttp glue for every HTTP listener of the broker (token service, its health port, sidecar, demo API).

* :mod:`broker.web.protocol`    :class:`HardenedRequestHandler`: fixed error bodies that never echo a request
  byte, no request byte in any log, a deadline on each request's headers and body (slowloris), an answer to a
  complete request followed by a half-close
* :mod:`broker.web.runner`      :class:`HardenedAppRunner` and the sites that use it (TLS handshake deadline)
* :mod:`broker.web.tls_buffer`  a TLS listener's per-connection read buffer (asyncio's is 256 KiB; one record will do)
* :mod:`broker.web.access_log`  :class:`RouteAccessLogger`: method, route template and status only; probes at DEBUG
* :mod:`broker.web.errors`      the one error renderer (:func:`render_error`, :func:`error_middleware`) over
  :mod:`broker.oauth.response`

aiohttp's defaults this replaces (3.14): the HTTP parser's error text, which quotes the offending request bytes,
is both sent back in the 400 body and logged at ERROR with the exception; there is no header or body timeout
(the keep-alive timer defaults to an hour); a peer's EOF closes the connection before the response is written.
"""

from broker.web.access_log import RouteAccessLogger
from broker.web.protocol import HardenedRequestHandler, ListenerLimits
from broker.web.runner import HardenedAppRunner, start_sock_site, start_tcp_site

__all__ = [
    "HardenedAppRunner",
    "HardenedRequestHandler",
    "ListenerLimits",
    "RouteAccessLogger",
    "start_sock_site",
    "start_tcp_site",
]
