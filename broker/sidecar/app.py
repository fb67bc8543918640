"""The sidecar's HTTP API for apps, on a Unix socket (and optionally a loopback port).

``GET /v1/token?audience=A[&scope=S]`` -> ``{"access_token", "token_type", "issued_token_type"[, "scope"],
"expires_in"}`` with ``Cache-Control: no-store`` (RFC 6749 §5.1: absent members are omitted).
``GET /healthz``: the process is alive. ``GET /readyz``: 200 when the sidecar can serve its app: it holds an
X.509-SVID, and either a cached token that is still valid or a token service that answered its last contact.
A token service outage alone does not make a sidecar with valid cached tokens unready (that would take every
client pod out of service at once). ``GET /v1/status``: JSON with the SVID, the token service's reachability and
the cache size, for operators. Errors are ``{"error", "error_description"}`` (RFC 6749 §5.2 shape): 400 malformed
request, 403 refused by the token service (its error code passed through), 503 ``temporarily_unavailable`` with
the reason (no X.509-SVID yet, token service unreachable and no cached token); 403 ``access_denied`` while the
token service's revocation feed says this workload is quarantined (:mod:`broker.sidecar.revocations`).
``POST /v1/dpop-proof`` (with ``token_binding = "dpop"``; else 409 ``dpop_not_enabled``): a DPoP proof signed with
the workload's SVID key for a request of the app (RFC 9449 §4.2; :mod:`broker.sidecar.proofs`); refused like
``/v1/token`` while the workload is quarantined.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from broker.errors import AccessDeniedError, BrokerError, InvalidRequestError, ServerError, TemporarilyUnavailableError
from broker.identity.errors import SvidUnavailableError
from broker.identity.source import SubscribableX509Source, current_x5t
from broker.oauth.grammar import AUDIENCE, SCOPE, normalize_scope
from broker.sidecar.cache import CacheKey, TokenCache
from broker.sidecar.dpop import SvidProofSigner
from broker.sidecar.errors import BodyTooLargeError, DpopNotEnabledError, WorkloadQuarantinedError
from broker.sidecar.health import TokenServiceHealth
from broker.sidecar.probe import probe_when_idle
from broker.sidecar.proofs import MAX_BODY, parse_proof_request, proof_body
from broker.sidecar.revocations import RevocationWatcher
from broker.sidecar.sockets import is_loopback_host, over_tcp
from broker.sidecar.token_result import Exchanger
from broker.web.errors import NO_STORE, error_response, render_error
from broker.web.metrics import metrics_response
from broker.web.request_id import request_id_middleware

if TYPE_CHECKING:  # only a sidecar that serves /metrics loads prometheus_client (broker.sidecar.service), only
    from prometheus_client import CollectorRegistry  # one with an egress listener the egress proxy

    from broker.sidecar.egress.proxy import EgressProxy

__all__ = ["CACHE", "PROOFS", "REVOCATIONS", "SOURCE", "TOKEN_SERVICE", "TokenServiceLink", "build_sidecar_app"]

log = logging.getLogger(__name__)

# RFC 8693 §2.1 audience, RFC 6749 §3.3 scope: the grammar of broker.oauth.grammar, with length limits.
_MAX_AUDIENCE = 2048
_MAX_SCOPE = 2048
_MAX_KEY_MEMO = 4096
_TOKEN_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"}
_JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}


class TokenServiceLink(Exchanger, Protocol):
    """What the app needs from the token service client: exchanges, a probe, and reachability in ``health``."""

    health: TokenServiceHealth

    async def probe(self) -> bool: ...

    async def aclose(self) -> None: ...


CACHE = web.AppKey("token_cache", TokenCache)
REVOCATIONS = web.AppKey("revocations", RevocationWatcher)
SOURCE = web.AppKey("svid_source", SubscribableX509Source)
TOKEN_SERVICE = web.AppKey("token_service", TokenServiceLink)
PROOFS = web.AppKey("dpop_proofs", SvidProofSigner)
REVEAL: web.AppKey[EgressProxy] = web.AppKey("apikeys_reveal")
METRICS: web.AppKey[CollectorRegistry] = web.AppKey("metrics")


class _KeyMemo(dict[str, CacheKey]):
    """Validated cache keys by raw query string, so a repeated request skips query parsing."""


_KEY_MEMO = web.AppKey("token_key_memo", _KeyMemo)


def _parse_key(request: web.Request) -> CacheKey:
    """The (audience, normalised scope) of a ``/v1/token`` query; single values only (RFC 6749 §3.1)."""
    query = request.query
    audiences = query.getall("audience", [])
    if len(audiences) != 1 or len(audiences[0]) > _MAX_AUDIENCE or not AUDIENCE.fullmatch(audiences[0]):
        raise InvalidRequestError("exactly one audience (printable ASCII, no spaces) is required")
    scopes = query.getall("scope", [])
    if len(scopes) > 1:
        raise InvalidRequestError("scope must not be repeated")
    scope = scopes[0] if scopes else ""
    if scope == "":
        return audiences[0], None
    if len(scope) > _MAX_SCOPE or not SCOPE.fullmatch(scope):
        raise InvalidRequestError("scope is not a space-separated list of scope tokens (RFC 6749 §3.3)")
    return audiences[0], normalize_scope(scope)


def check_local_client(request: web.Request) -> None:
    """On the loopback TCP port, refuse what a web page could send (DNS rebinding, cross-site requests).

    A page the user opens may make the browser call ``http://<rebound name>:<port>/v1/token``; such a request
    carries the page's host name in ``Host`` (and often an ``Origin``). Local clients name a loopback host and send
    no ``Origin``. The Unix socket is reachable only through the file system, so it is not checked.
    """
    if not over_tcp(request.transport):
        return
    if not is_loopback_host(request.headers.get("Host", "")) or "Origin" in request.headers:
        raise AccessDeniedError("the sidecar serves local clients only (Host must be a loopback name, no Origin)")


async def token_handler(request: web.Request) -> web.Response:
    """``GET /v1/token``: a dict lookup and pre-serialised bytes when cached; else one shared exchange."""
    app = request.app
    memo = app[_KEY_MEMO]
    query_string = request.query_string
    key = memo.get(query_string)
    try:
        check_local_client(request)
        if key is None:
            key = _parse_key(request)
            if len(memo) >= _MAX_KEY_MEMO:
                memo.clear()
            memo[query_string] = key
        cache = app[CACHE]
        body = cache.lookup(key)
        if body is None:
            body = (await cache.get(key)).body(cache.now())
    except SvidUnavailableError:
        return render_error(TemporarilyUnavailableError(_no_svid(app[SOURCE])))
    except BrokerError as exc:
        return render_error(exc)
    except Exception as exc:  # a bug must still answer in JSON, and must not log the query (or anything secret)
        log.error("GET /v1/token failed unexpectedly: %s", type(exc).__name__)
        return render_error(ServerError())
    return web.Response(body=body, headers=_TOKEN_HEADERS)


async def dpop_proof_handler(request: web.Request) -> web.Response:
    """``POST /v1/dpop-proof``: a proof signed with the SVID key (:mod:`broker.sidecar.proofs`); never logged."""
    app = request.app
    try:
        check_local_client(request)
        signer = app.get(PROOFS)
        if signer is None:
            raise DpopNotEnabledError()
        wanted = parse_proof_request(request.content_type, await _body(request))
        if app[CACHE].suspended:
            raise WorkloadQuarantinedError()
        body = proof_body(wanted, signer)
    except SvidUnavailableError:
        return render_error(TemporarilyUnavailableError("no X.509-SVID yet from the Workload API"))
    except BrokerError as exc:
        return render_error(exc)
    except Exception as exc:  # a bug must still answer in JSON, and must not log the body (a token)
        log.error("POST /v1/dpop-proof failed unexpectedly: %s", type(exc).__name__)
        return render_error(ServerError())
    return web.Response(body=body, headers=_TOKEN_HEADERS)


async def _body(request: web.Request) -> bytes:
    """The request body, refused beyond :data:`~broker.sidecar.proofs.MAX_BODY` bytes before it is all read."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BodyTooLargeError(f"the request body is larger than {MAX_BODY} bytes")
    try:
        return await request.read()  # the app's client_max_size is MAX_BODY
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLargeError(f"the request body is larger than {MAX_BODY} bytes") from None


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', headers=_JSON_HEADERS)


def _no_svid(source: SubscribableX509Source) -> str:
    """Why an SVID is missing, for the app (details are in the logs and ``/v1/status``)."""
    if current_x5t(source) is None:
        return "no X.509-SVID yet from the Workload API"
    return "no JWT-SVID from the Workload API for the token service"


async def readyz(request: web.Request) -> web.Response:
    """Ready = holds an X.509-SVID, and a still-valid cached token or a token service that answered last time."""
    app = request.app
    if current_x5t(app[SOURCE]) is None:
        return error_response(503, "not_ready", "no X.509-SVID yet from the Workload API")
    health = app[TOKEN_SERVICE].health
    if not health.reachable and not app[CACHE].has_usable_token():
        never = "not reachable yet" if health.state == "unknown" else "unreachable"
        return error_response(503, "not_ready", f"token service {never} and no cached token")
    return web.Response(body=b'{"status":"ready"}', headers=_JSON_HEADERS)


async def status(request: web.Request) -> web.Response:
    """``GET /v1/status``: what an operator needs to see; no token, no key; local clients only, as /v1/token."""
    try:
        check_local_client(request)
    except AccessDeniedError as exc:
        return render_error(exc)
    app = request.app
    try:
        svid = app[SOURCE].x509_svid()
        identity: object = {"spiffe_id": str(svid.spiffe_id), "expires_at": svid.not_after.isoformat()}
    except SvidUnavailableError:
        identity = None
    cache = app[CACHE]
    document = {
        "ready": identity is not None and (app[TOKEN_SERVICE].health.reachable or cache.has_usable_token()),
        "x509_svid": identity,
        "token_service": app[TOKEN_SERVICE].health.snapshot(),
        "cached_tokens": len(cache),
        "tokens": [
            {"audience": audience, "expires_in": round(expires_at - cache.now(), 1)}
            for audience, expires_at in sorted(cache.expiries())
        ],
        "quarantined": cache.suspended,
        "token_binding": "dpop" if PROOFS in app else "mtls",
    }
    if REVOCATIONS in app:
        document["revocation_feed"] = app[REVOCATIONS].follower.status()
    return web.Response(body=json.dumps(document).encode(), headers=_JSON_HEADERS)


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics`` on the app's socket (only with ``[metrics] on_app_socket``); local clients only, as
    ``/v1/status`` (it names audiences and exceptions)."""
    try:
        check_local_client(request)
    except AccessDeniedError as exc:
        return render_error(exc)
    return metrics_response(request.app[METRICS])


async def not_found(request: web.Request) -> web.Response:
    return error_response(404, "not_found", "unknown path")


async def method_not_allowed(request: web.Request) -> web.Response:
    response = error_response(405, "method_not_allowed", "use GET")
    response.headers["Allow"] = "GET, HEAD"
    return response


async def post_only(request: web.Request) -> web.Response:
    response = error_response(405, "method_not_allowed", "use POST")
    response.headers["Allow"] = "POST"
    return response


async def reveal_handler(request: web.Request) -> web.Response:
    """``GET /v1/apikeys/{name}``: a ``reveal`` exception's secret for the app (:mod:`broker.sidecar.egress.reveal`);
    nothing of the answer is logged."""
    from broker.sidecar.egress.reveal import reveal_secret  # the route exists only with an egress proxy

    try:
        check_local_client(request)
        revealed = await reveal_secret(request.app[REVEAL], request.match_info["name"])
    except BrokerError as exc:
        return render_error(exc)
    except Exception as exc:  # a bug must still answer in JSON, and must not log the answer
        log.error("GET /v1/apikeys failed unexpectedly: %s", type(exc).__name__)
        return render_error(ServerError())
    return web.Response(body=revealed.body, content_type="application/json", headers={**NO_STORE})


def build_sidecar_app(
    *,
    source: SubscribableX509Source,
    token_service: TokenServiceLink,
    cache: TokenCache,
    probe_interval: float = 5.0,
    revocations: RevocationWatcher | None = None,
    proofs: SvidProofSigner | None = None,
    reveal: EgressProxy | None = None,
    metrics: CollectorRegistry | None = None,
) -> web.Application:
    """The app; its cleanup closes the cache and the token service client and stops the prober.

    ``probe_interval``: seconds without a successful contact with the token service before it is probed.
    ``revocations``: follows the revocation feed while the app runs (started and closed with it).
    ``proofs``: serve ``POST /v1/dpop-proof`` with this signer (``token_binding = "dpop"``).
    ``reveal``: serve ``GET /v1/apikeys/{name}`` for ``reveal`` exceptions from this egress proxy's grants.
    ``metrics``: also serve ``GET /metrics`` from this registry (``[metrics] on_app_socket``).
    """
    app = web.Application(
        handler_args={"max_field_size": 16384}, client_max_size=MAX_BODY, middlewares=[request_id_middleware]
    )
    app[SOURCE] = source
    app[TOKEN_SERVICE] = token_service
    app[CACHE] = cache
    app[_KEY_MEMO] = _KeyMemo()
    if proofs is not None:
        app[PROOFS] = proofs
    if revocations is not None:
        app[REVOCATIONS] = revocations
        app.cleanup_ctx.append(_following(revocations))
    app.cleanup_ctx.append(_lifecycle(source, token_service, cache, probe_interval))
    routes = [("/v1/token", token_handler), ("/v1/status", status), ("/healthz", healthz), ("/readyz", readyz)]
    if metrics is not None:
        app[METRICS] = metrics
        routes.append(("/metrics", metrics_handler))
    for path, handler in routes:
        app.router.add_get(path, handler)
        app.router.add_route("*", path, method_not_allowed)
    if reveal is not None:
        app[REVEAL] = reveal
        app.router.add_get("/v1/apikeys/{name}", reveal_handler)
    app.router.add_post("/v1/dpop-proof", dpop_proof_handler)
    app.router.add_route("*", "/v1/dpop-proof", post_only)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


def _following(revocations: RevocationWatcher) -> Callable[[web.Application], AsyncIterator[None]]:
    async def run(app: web.Application) -> AsyncIterator[None]:
        revocations.start()
        yield
        await revocations.aclose()

    return run


def _lifecycle(
    source: SubscribableX509Source, token_service: TokenServiceLink, cache: TokenCache, probe_interval: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def run(app: web.Application) -> AsyncIterator[None]:
        wake = asyncio.Event()
        unsubscribe = source.subscribe(wake.set)  # a new SVID (or the first one): probe at once
        probing = probe_when_idle(token_service, source, interval=probe_interval, wake=wake)
        prober = asyncio.get_running_loop().create_task(probing)
        try:
            yield
        finally:
            unsubscribe()
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober
            await cache.aclose()
            await token_service.aclose()

    return run
