"""The egress proxy's request handler: check, route, inject, forward, stream back, report.

For each request, in this order (each refusal is a JSON ``{"error", "error_description"}`` answer,
:mod:`broker.sidecar.egress.errors`; those with a refusal reason are also reported to the token service):

1. On the loopback port, refuse what a web page could send: any ``Origin`` or ``Sec-Fetch-*`` header (browsers add
   them, scripts cannot remove them), and a local route whose ``Host`` is not a loopback name (DNS rebinding).
2. ``CONNECT``: 405 ``connect_not_supported`` (see :mod:`broker.sidecar.egress`). ``TRACE``: 405
   ``method_not_allowed`` (the target would send the request back, key included).
3. The destination (:mod:`~broker.sidecar.egress.routing`): absolute-form (forward proxy) or ``/{name}/...``.
4. The exception (:mod:`~broker.sidecar.egress.placeholders`): a placeholder of an exception that does not cover
   the target refuses the request; no exception covering it is 403 ``target_not_covered``. A name or target the
   catalog does not know makes it fetch the catalog again first (bounded, :mod:`~broker.sidecar.egress.catalog`).
5. The grant (:mod:`~broker.sidecar.egress.grants`), whose own target must cover the destination too.
6. Injection (:mod:`~broker.sidecar.egress.inject`) into the app's headers minus hop-by-hop ones
   (:mod:`~broker.sidecar.egress.headers`), then the request to the target (:mod:`~broker.sidecar.egress.upstream`),
   its body streamed from the app as it arrives.
7. The response streamed back with the secret masked; the use counted for the next report (also when the
   connection to the target was up but no response came: the key may have reached it). The target was asked
   for an uncompressed body (``Accept-Encoding: identity``); one that answers with a compressed body anyway gets
   502 ``bad_gateway``: the proxy cannot check such a body for the key, so it does not pass it on.

A target that breaks off its response after the status line was sent: the app's connection is aborted, never
ended cleanly, so a truncated body cannot pass for a complete one.
"""

from __future__ import annotations

import logging
from collections import Counter

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDictProxy

from broker.apikeys.grant import CatalogEntry, Grant
from broker.errors import AccessDeniedError
from broker.sidecar.egress.catalog import CatalogView
from broker.sidecar.egress.errors import (
    BadGatewayError,
    ConnectNotSupportedError,
    EgressError,
    EgressUnavailableError,
    MethodNotAllowedError,
    TargetNotCoveredError,
)
from broker.sidecar.egress.grants import GrantCache
from broker.sidecar.egress.headers import ask_for_identity, forwarded_request_headers, forwarded_response_headers, via
from broker.sidecar.egress.inject import SecretScrubber, inject
from broker.sidecar.egress.placeholders import choose_exception, placeholders_in, request_texts
from broker.sidecar.egress.report import EgressReporter
from broker.sidecar.egress.routing import Destination, forward_destination, route_destination, route_name
from broker.sidecar.egress.upstream import Upstream
from broker.sidecar.sockets import is_loopback_host, over_tcp
from broker.web.errors import render_error

__all__ = ["EgressProxy"]

log = logging.getLogger(__name__)

_CONNECT_REFUSED = (
    "CONNECT opens a TLS tunnel the sidecar cannot see into, so it cannot inject an API key: send plain http:// "
    "requests through this proxy (it adds TLS to the target itself), or use a local route /<exception>/<path>"
)
_TRACE_REFUSED = "TRACE is not forwarded: the target would send the request back, API key included"
_COMPRESSED = "the target answered with a compressed body the proxy cannot check for the key"
_NO_BODY_STATUSES = frozenset({204, 304})


class EgressStats:
    """Requests by (exception, outcome) and bytes by (exception, direction), read by the metrics at scrape time.
    The exception is a name from the catalog, else ``none``: a name the app made up is never a label."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.bytes: Counter[tuple[str, str]] = Counter()

    def count(self, name: str, outcome: str) -> None:
        self.requests[name, outcome] += 1

    def add_bytes(self, name: str, direction: str, count: int) -> None:
        self.bytes[name, direction] += count


def _outcome(status: int) -> str:
    if status in (401, 403):
        return "denied"
    if status == 503:
        return "unavailable"
    if status in (502, 504):
        return "upstream_error"
    return "bad_request"


class EgressProxy:
    """The handler of the egress listener; the parts are injected (see :func:`~broker.sidecar.egress.service`)."""

    def __init__(self, *, catalog: CatalogView, grants: GrantCache, reporter: EgressReporter, upstream: Upstream):
        self.catalog = catalog
        self.grants = grants
        self.reporter = reporter
        self.upstream = upstream
        self.stats = EgressStats()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        where = _where(request)
        try:
            _check_local_client(request)
            if request.method == "CONNECT":
                raise ConnectNotSupportedError(_CONNECT_REFUSED)
            if request.method == "TRACE":
                raise MethodNotAllowedError(_TRACE_REFUSED)
            destination = await self._destination(request)
            where = destination.where()
            entry = await self._exception(request, destination)
            grant = await self.grants.get(entry.name)
            if not grant.target.matches("https", destination.host, destination.port, destination.path):
                raise TargetNotCoveredError(f"exception {entry.name} no longer covers {where}", name=entry.name)
            return await self._forward(request, destination, grant)
        except (EgressError, AccessDeniedError) as exc:
            return self._refuse(request, exc, where)

    async def _destination(self, request: web.Request) -> Destination:
        target = request.raw_path  # the request target as sent (aiohttp's name for it)
        if _absolute_form(request):
            return forward_destination(target)
        name = route_name(target)
        entry = None if name is None else await self._entry_named(name)
        return route_destination(target, None if entry is None else entry.target)

    async def _entry_named(self, name: str) -> CatalogEntry | None:
        entry = self.catalog.by_name(name)
        if entry is None and await self._refetch():
            entry = self.catalog.by_name(name)
        return entry

    async def _refetch(self) -> bool:
        """A catalog fetch for a request that named something unknown; False if none was made or it failed.

        Before the first catalog (a sidecar just started: its SVID may have arrived a moment after the first
        fetch) every such request gets a fetch, sharing one in flight, rather than failing on the rate limit that
        applies later; :class:`EgressUnavailableError` (503) if there is still no catalog."""
        refreshed = await (self.catalog.refresh_on_miss() if self.catalog.loaded else self.catalog.refresh())
        if not self.catalog.loaded:
            raise EgressUnavailableError("the list of usable API-key exceptions is not available yet")
        return refreshed

    async def _exception(self, request: web.Request, destination: Destination) -> CatalogEntry:
        """The exception whose secret the request gets (refusing placeholders sent elsewhere)."""
        headers = request.headers
        covering = self.catalog.covering(destination)
        named = placeholders_in(request_texts(destination, headers))
        if (not covering or any(self.catalog.by_name(name) is None for name in named)) and await self._refetch():
            covering = self.catalog.covering(destination)
        entry = choose_exception(covering, destination, headers)
        if destination.route is not None:
            entry = next((e for e in covering if e.name == destination.route), None)
        if entry is None:
            raise TargetNotCoveredError(
                f"no API-key exception this workload may use covers {destination.where()}", name=destination.route
            )
        return entry

    async def _forward(self, request: web.Request, destination: Destination, grant: Grant) -> web.StreamResponse:
        headers = forwarded_request_headers(request.headers, via(request.version))
        ask_for_identity(headers)
        query = inject(headers, destination.query, grant.presentation, grant.secret)
        body = request.content if request.body_exists else None
        url = destination.url(query)
        try:
            upstream = await self.upstream.open(request.method, destination, url, headers, body)
        except EgressError as exc:
            exc.name = grant.name  # the report says whose request it was
            if exc.key_sent:  # the key left the sidecar: a use, although no response came back
                self.reporter.used(grant.name, grant.version, destination.origin)
            raise
        self.reporter.used(grant.name, grant.version, destination.origin)
        self.stats.add_bytes(grant.name, "sent", request.content_length or 0)
        try:
            response, received = await _relay(request, upstream, SecretScrubber(grant.secret), destination)
        except BaseException as exc:
            upstream.close()
            if isinstance(exc, EgressError):
                exc.name = grant.name  # counted and reported with its refusal, under this exception
            elif isinstance(exc, Exception):
                self.stats.count(grant.name, "upstream_error")
            raise
        upstream.release()
        self.stats.count(grant.name, "ok")
        self.stats.add_bytes(grant.name, "received", received)
        return response

    def _refuse(self, request: web.Request, exc: EgressError | AccessDeniedError, where: str) -> web.Response:
        reason = getattr(exc, "reason", None)
        name = getattr(exc, "name", None)
        if reason is not None:
            self.reporter.refused(name, where, reason)
        log.info("egress %s %s refused: %s (%s)", request.method, where, exc.error, exc.description)
        response = render_error(exc)
        known = name is not None and self.catalog.by_name(name) is not None
        self.stats.count(name if known and name is not None else "none", _outcome(response.status))
        if request.method == "CONNECT":
            response.force_close()  # whatever follows a CONNECT is tunnel bytes, not a request
        return response


def _where(request: web.Request) -> str:
    """The destination as far as known before routing, for a log line, an error or a report: the raw target
    without user information (``user:password@``), query or fragment."""
    target = request.raw_path.partition("?")[0].partition("#")[0]
    scheme, sep, rest = target.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        target = scheme + sep + authority.rpartition("@")[2] + slash + path
    return target[:2048]


def _absolute_form(request: web.Request) -> bool:
    """Whether the request target is absolute-form (a forward-proxy request, RFC 9112 §3.2.2), not ``/path``."""
    return not request.raw_path.startswith("/")


def _check_local_client(request: web.Request) -> None:
    """On the loopback port: no browser-made request (``Origin``, ``Sec-Fetch-*``); a local route names a loopback
    ``Host`` (a forward-proxy request names the target there, RFC 9112 §3.2.2)."""
    if not over_tcp(request.transport):
        return
    headers = request.headers
    if "Origin" in headers or any(name.lower().startswith("sec-fetch-") for name in headers):
        raise AccessDeniedError("the egress proxy serves local clients only, not web pages (Origin, Sec-Fetch-*)")
    if not _absolute_form(request) and not is_loopback_host(headers.get("Host", "")):
        raise AccessDeniedError("the egress proxy serves local clients only (Host must be a loopback name)")


class _Relayed(web.StreamResponse):
    """A response to the app that adds no ``Content-Type`` of its own when the target sent none (aiohttp would add
    ``application/octet-stream``, telling the app something the target did not say)."""

    async def _prepare_headers(self) -> None:
        typed = hdrs.CONTENT_TYPE in self.headers
        await super()._prepare_headers()
        if not typed:
            self.headers.popall(hdrs.CONTENT_TYPE, None)


async def _relay(
    request: web.Request, upstream: aiohttp.ClientResponse, scrubber: SecretScrubber, destination: Destination
) -> tuple[web.StreamResponse, int]:
    """Stream the target's response to the app, the secret masked (see :mod:`~broker.sidecar.egress.inject`);
    the response and the body bytes the target sent."""
    if not _identity(upstream.headers) and _has_body(request.method, upstream.status):
        raise BadGatewayError(_COMPRESSED)
    response = _Relayed(status=upstream.status)  # the standard reason phrase, never the target's
    for name, value in forwarded_response_headers(upstream.headers, via(upstream.version)).items():
        response.headers.add(name, scrubber.header(value))
    if upstream.content_length is not None:
        response.content_length = upstream.content_length
    await response.prepare(request)
    received = 0
    try:
        async for chunk in upstream.content.iter_any():
            received += len(chunk)
            await response.write(scrubber.feed(chunk))
    except (aiohttp.ClientError, TimeoutError) as exc:
        # A write to an app that went away raises a ClientConnectionResetError (a ClientError) too: name the side.
        app_gone = isinstance(exc, ConnectionResetError) or (
            request.transport is None or request.transport.is_closing()
        )
        side = "the app went away during" if app_gone else f"{destination.origin} broke off"
        log.info("%s its response (%s): aborting the app's connection", side, type(exc).__name__)
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError("the target broke off its response") from None
    tail = scrubber.flush()
    if tail:
        await response.write(tail)
    await response.write_eof()
    return response, received


def _identity(headers: CIMultiDictProxy[str]) -> bool:
    """Whether the body arrives as it is: no content coding (every ``Content-Encoding`` field counted), and no
    transfer coding but ``chunked`` (which the client has already undone)."""
    codings = _tokens(headers.getall("Content-Encoding", ())) - {"identity"}
    transfer = _tokens(headers.getall("Transfer-Encoding", ())) - {"identity", "chunked"}
    return not codings and not transfer


def _tokens(values: list[str] | tuple[str, ...]) -> set[str]:
    return {token.strip().lower() for value in values for token in value.split(",") if token.strip()}


def _has_body(method: str, status: int) -> bool:
    """Whether a response to ``method`` with ``status`` carries a body (RFC 9110 §6.4.1)."""
    return method != "HEAD" and status not in _NO_BODY_STATUSES and status >= 200
