"""Per-request metrics of an aiohttp app, and the ``GET /metrics`` listener that exposes a registry.

:func:`request_metrics_middleware` (the outermost middleware of the token service app, installed only when
``[metrics] enabled``) counts every answered request once, after the error renderer has made it an answer:

* ``spiffe_broker_requests_total{endpoint, grant_type, outcome}``: ``endpoint`` is the matched route's template
  (``-`` when none matched), ``grant_type`` the short name of a grant the endpoint serves
  (:func:`grant_label`; ``none`` elsewhere), ``outcome`` ``ok`` or the RFC 6749 §5.2 / RFC 9449 error code the
  renderer sent (:data:`OUTCOME_KEY`), ``http_<status>`` for another error status;
* ``spiffe_broker_request_duration_seconds{endpoint}``: every answered request;
* ``spiffe_broker_exchange_duration_seconds{grant_type}``: ``/token`` requests that issued a token;
* ``spiffe_broker_tokens_issued_total{grant_type, binding}``;
* ``spiffe_broker_client_requests_total{spiffe_id, outcome}`` only with ``[metrics] spiffe_id_labels``: the
  issued token's ``sub``, at most ``max_spiffe_id_labels`` of them (:class:`~broker.metrics.CappedLabel`).

Handlers say what they know through request keys (:data:`GRANT_TYPE_KEY`, :data:`CLIENT_KEY`,
:data:`BINDING_KEY`); a value a client wrote is never a label. A request whose client went away is not counted
(there was no answer). :func:`start_metrics_listener` serves ``GET /metrics`` (and ``/healthz``) in plain HTTP on
a TCP port and/or a Unix socket, with the hardened runner and no access log (a scrape every 15 s is not news).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from broker._unix import bind_unix_socket
from broker.web.access_log import route_of
from broker.web.runner import HardenedAppRunner, start_sock_site, start_tcp_site

if TYPE_CHECKING:  # prometheus_client is imported where metrics are built or served: a process without them
    from prometheus_client import CollectorRegistry, Counter  # (a sidecar by default) never loads it

    from broker.metrics import CappedLabel

__all__ = [
    "BINDING_KEY",
    "CLIENT_KEY",
    "GRANT_TYPE_KEY",
    "LATENCY_BUCKETS",
    "OUTCOME_KEY",
    "HttpMetrics",
    "MetricsListener",
    "grant_label",
    "metrics_response",
    "request_metrics_middleware",
    "start_metrics_listener",
]

OUTCOME_KEY = web.RequestKey("outcome", str)  # the error code the renderer answered with
GRANT_TYPE_KEY: web.RequestKey[str | None] = web.RequestKey("grant_type")  # a grant type the endpoint serves
CLIENT_KEY = web.RequestKey("client", str)  # the issued token's sub
BINDING_KEY = web.RequestKey("binding", str)  # "x5t#S256", "jkt" or "none"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def grant_label(grant_type: str | None) -> str:
    """``urn:ietf:params:oauth:grant-type:token-exchange`` -> ``token_exchange``; None -> ``none``."""
    if not grant_type:
        return "none"
    return grant_type.rsplit(":", 1)[-1].replace("-", "_")


class HttpMetrics:
    """The token service's request instruments on ``registry`` (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry, *, spiffe_id_labels: int | None = None) -> None:
        from prometheus_client import Counter, Histogram

        from broker.metrics import PREFIX, CappedLabel

        self.requests = Counter(f"{PREFIX}requests", "Answered requests by endpoint, grant type and outcome",
                                ["endpoint", "grant_type", "outcome"], registry=registry)  # fmt: skip
        self.duration = Histogram(f"{PREFIX}request_duration_seconds", "Time to answer a request, by endpoint",
                                  ["endpoint"], buckets=LATENCY_BUCKETS, registry=registry)  # fmt: skip
        self.exchange = Histogram(f"{PREFIX}exchange_duration_seconds", "Time to issue a token at /token",
                                  ["grant_type"], buckets=LATENCY_BUCKETS, registry=registry)  # fmt: skip
        self.issued = Counter(f"{PREFIX}tokens_issued", "Access tokens issued, by grant type and binding",
                              ["grant_type", "binding"], registry=registry)  # fmt: skip
        self.clients: Counter | None = None
        self._bound: dict[tuple[str, str, str], tuple[Any, Any]] = {}  # bounded: label values are from fixed sets
        self._bound_issue: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._grant_labels: dict[str | None, str] = {}
        self._client_label: CappedLabel = CappedLabel(spiffe_id_labels or 0)
        if spiffe_id_labels is not None:
            self.clients = Counter(f"{PREFIX}client_requests", "Token requests by client SPIFFE ID (capped)",
                                   ["spiffe_id", "outcome"], registry=registry)  # fmt: skip

    def observe(self, request: web.Request, status: int, seconds: float) -> None:
        endpoint = route_of(request)
        grant_type = request.get(GRANT_TYPE_KEY)
        grant = self._grant_labels.get(grant_type)
        if grant is None:  # bounded: only grant types the endpoint serves are ever set (GRANT_TYPE_KEY)
            grant = self._grant_labels[grant_type] = grant_label(grant_type)
        outcome = "ok" if status < 400 else request.get(OUTCOME_KEY) or f"http_{status}"
        counted, timed = self._children(endpoint, grant, outcome)
        counted.inc()
        timed.observe(seconds)
        binding = request.get(BINDING_KEY)
        if binding is not None and outcome == "ok":
            exchange, issued = self._issue_children(grant, binding)
            exchange.observe(seconds)
            issued.inc()
        client = request.get(CLIENT_KEY)
        if self.clients is not None and client is not None:
            self.clients.labels(self._client_label(client), outcome).inc()

    def _children(self, endpoint: str, grant: str, outcome: str) -> tuple[Any, Any]:
        """The labelled children, looked up once per label set (``labels()`` takes a lock and builds a tuple)."""
        key = (endpoint, grant, outcome)
        children = self._bound.get(key)
        if children is None:
            children = self._bound[key] = (self.requests.labels(*key), self.duration.labels(endpoint))
        return children

    def _issue_children(self, grant: str, binding: str) -> tuple[Any, Any]:
        key = (grant, binding)
        children = self._bound_issue.get(key)
        if children is None:
            children = self._bound_issue[key] = (self.exchange.labels(grant), self.issued.labels(grant, binding))
        return children


def request_metrics_middleware(metrics: HttpMetrics) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            metrics.observe(request, exc.status, time.perf_counter() - started)
            raise
        metrics.observe(request, response.status, time.perf_counter() - started)
        return response

    return middleware


def metrics_response(registry: CollectorRegistry) -> web.Response:
    """``registry`` in the Prometheus text exposition format, not to be cached."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


async def _metrics(request: web.Request) -> web.Response:
    for refresh in request.app[_BEFORE_SCRAPE]:
        await refresh()
    return metrics_response(request.app[_REGISTRY])


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


_REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry")
_BEFORE_SCRAPE: web.AppKey[Sequence[Callable[[], Awaitable[None]]]] = web.AppKey("before_scrape")


def build_metrics_app(
    registry: CollectorRegistry, before_scrape: Sequence[Callable[[], Awaitable[None]]] = ()
) -> web.Application:
    """``GET /metrics``: each ``before_scrape`` hook (a bounded read of state kept elsewhere), then ``registry``."""
    app = web.Application()
    app[_REGISTRY] = registry
    app[_BEFORE_SCRAPE] = tuple(before_scrape)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    return app


@dataclass
class MetricsListener:
    """A started ``/metrics`` listener: its TCP port (if any) and :meth:`aclose`."""

    runner: HardenedAppRunner
    port: int | None = None
    socket_path: Path | None = field(default=None)

    async def aclose(self) -> None:
        await self.runner.cleanup()


async def start_metrics_listener(
    registry: CollectorRegistry,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    socket_path: Path | None = None,
    before_scrape: Sequence[Callable[[], Awaitable[None]]] = (),
) -> MetricsListener:
    """Serve ``registry`` on ``host:port`` (0: any free port) and/or the Unix socket ``socket_path`` (mode 0600)."""
    if port is None and socket_path is None:
        raise ValueError("a metrics listener needs a port or a socket")
    runner = HardenedAppRunner(build_metrics_app(registry, before_scrape), access_log=None)
    await runner.setup()
    listener = MetricsListener(runner)
    try:
        if port is not None:
            listener.port = await start_tcp_site(runner, host, port)
        if socket_path is not None:
            await start_sock_site(runner, bind_unix_socket(socket_path, 0o600))
            listener.socket_path = socket_path
    except BaseException:
        await runner.cleanup()
        raise
    return listener
