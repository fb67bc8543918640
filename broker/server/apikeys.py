"""The token service's side of governed API-key exceptions, for sidecars (issue 12; wire: :mod:`broker.apikeys.grant`).

::

    GET  /v1/apikeys                 the exceptions the caller may use now (never a secret)      200 Catalog
    POST /v1/apikeys/{name}/grant    the current secret, after every check (empty body or {})    200 Grant
    POST /v1/apikeys/report          the sidecar's aggregated uses and refusals (JSON)           204

Each authenticates the caller exactly as ``/token`` does, before any body byte is read: RFC 8705 §2.1
``tls_client_auth`` with an X.509-SVID verified against its own trust domain's bundle (X509-SVID §5); the caller
is that SVID's SPIFFE ID. Anything else (no certificate, a client assertion, an ``Authorization`` header) is 401
``invalid_client``: a secret is granted to a workload's own identity only. The decision and its audit records are
:class:`~broker.apikeys.decision.GrantDecider`'s, the report's :class:`~broker.apikeys.usage.UsageRecorder`'s.

Every answer carries ``Cache-Control: no-store`` (RFC 9111 §5.2.2.5) and ``Pragma: no-cache``; a refusal is the
one error renderer's ``{"error", "error_description"}`` (:mod:`broker.web.errors`): 401, 403 ``access_denied``,
404 ``not_found``, 400 ``invalid_request``, 503 ``temporarily_unavailable``. No secret reaches a log: the access log
names the route template, not the path (:mod:`broker.web.access_log`), no body is ever logged, and refusals carry
codes and fixed descriptions. A grant's request body is at most :data:`GRANT_MAX_BODY` bytes; a report's at most
:data:`REPORT_MAX_BODY` (room for :data:`~broker.apikeys.grant.MAX_REPORT_ITEMS` uses and as many refusals with
targets of 2048 characters), strict JSON (:func:`~broker.admin.inputs.read_json_object`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from broker.admin.inputs import read_json_object
from broker.apikeys.decision import GrantDecider
from broker.apikeys.grant import (
    CATALOG_PATH,
    GRANT_PATH,
    MAX_REPORT_ITEMS,
    REPORT_PATH,
    catalog_to_wire,
    grant_to_wire,
    report_from_wire,
)
from broker.apikeys.registry import ApiKeyRegistry
from broker.apikeys.rules import GovernanceRules
from broker.apikeys.usage import UsageRecorder
from broker.config import BrokerSettings
from broker.errors import ConfigError, InvalidClientError, InvalidRequestError, TemporarilyUnavailableError
from broker.events.revocations import SubjectQuarantined
from broker.oauth.constants import AUTH_TLS_CLIENT_AUTH
from broker.oauth.response import NO_STORE
from broker.server.request import request_context
from broker.server.revocations import ReplicaRevocations
from broker.server.state import SERVICE
from broker.server.stateful import ServiceState
from broker.web.body import read_bounded

__all__ = [
    "APIKEYS",
    "GRANT_MAX_BODY",
    "REPORT_MAX_BODY",
    "ApiKeyService",
    "ReplicaQuarantine",
    "add_apikey_routes",
    "open_apikeys",
]

log = logging.getLogger(__name__)

GRANT_MAX_BODY = 64
REPORT_MAX_BODY = 2 * MAX_REPORT_ITEMS * 2400  # per item: a 2048-character target and the other members
CLOSE_TIMEOUT = 10.0  # seconds to write the queued uses on a clean stop


@dataclass
class ApiKeyService:
    decider: GrantDecider
    usage: UsageRecorder


APIKEYS = web.AppKey("apikeys", ApiKeyService)


class ReplicaQuarantine:
    """The replica's revocation view (:class:`~broker.server.revocations.ReplicaRevocations`) as the grant's
    quarantine check; like ``/token``'s, it fails closed (503) when the view is not confirmed against the store."""

    def __init__(self, revocations: ReplicaRevocations) -> None:
        self._revocations = revocations

    def quarantine_of(self, subject: str, now: datetime) -> SubjectQuarantined | None:
        problem = self._revocations.problem()
        if problem is not None:
            raise TemporarilyUnavailableError(problem)
        return self._revocations.index.quarantine_of(subject, now)


def _caller(request: web.Request) -> str:
    """The SPIFFE ID of the X.509-SVID the caller presented (``tls_client_auth`` only)."""
    client = request.app[SERVICE].client_of(request_context(request))
    if client.auth_method != AUTH_TLS_CLIENT_AUTH or client.leaf is None:
        raise InvalidClientError("API-key exceptions are granted over mutual TLS with the workload's X.509-SVID only")
    return str(client.spiffe_id)


def _no_query(request: web.Request) -> None:
    if request.query_string:
        raise InvalidRequestError("this endpoint takes no query parameters")


async def catalog(request: web.Request) -> web.Response:
    spiffe_id = _caller(request)
    _no_query(request)
    found = await request.app[APIKEYS].decider.catalog(spiffe_id)
    return web.json_response(catalog_to_wire(found), headers=NO_STORE)


async def grant(request: web.Request) -> web.Response:
    spiffe_id = _caller(request)
    _no_query(request)
    if (await read_bounded(request, GRANT_MAX_BODY)).strip() not in (b"", b"{}"):
        raise InvalidRequestError("a grant request has an empty body (or {})")
    granted = await request.app[APIKEYS].decider.grant(spiffe_id, request.match_info["name"])
    return web.json_response(grant_to_wire(granted), headers=NO_STORE)


async def report(request: web.Request) -> web.Response:
    spiffe_id = _caller(request)
    body = await read_json_object(request, fields=frozenset({"uses", "refusals"}), max_body=REPORT_MAX_BODY)
    try:
        parsed = report_from_wire(body)
    except ValueError as exc:  # the wire parser's words name the member, never a value
        raise InvalidRequestError(f"not an egress report: {exc}") from None
    await request.app[APIKEYS].usage.record(spiffe_id, parsed)
    return web.Response(status=204, headers=NO_STORE)


def open_apikeys(
    settings: BrokerSettings, state: ServiceState, revocations: ReplicaRevocations, clock: Callable[[], float]
) -> tuple[ApiKeyRegistry, ApiKeyService]:
    """The registry (for the admin API) and the sidecars' service over the open state: the store's exceptions, the
    revocation log for withdrawals, the audit trail, the KEKs and ``[apikeys]``'s rules."""
    if state.secrets is None:
        raise ConfigError("API-key exceptions need the key-encryption key of a stateful service")
    rules = GovernanceRules.from_settings(settings.apikeys, leeway=settings.keyring.leeway)
    trail = state.recorder.trail
    registry = ApiKeyRegistry(state.store.apikeys, state.store.revocations, trail, state.secrets, rules, clock=clock)
    decider = GrantDecider(state.store.apikeys, state.secrets, rules, ReplicaQuarantine(revocations), trail,
                           clock=clock)  # fmt: skip
    return registry, ApiKeyService(decider, UsageRecorder(state.store.apikeys, trail, clock=clock))


def add_apikey_routes(app: web.Application, service: ApiKeyService) -> None:
    """Mount the three routes on the token app (before it starts); the usage writer runs while the app does."""
    app[APIKEYS] = service
    app.router.add_get(CATALOG_PATH, catalog)
    app.router.add_post(GRANT_PATH, grant)
    app.router.add_post(REPORT_PATH, report)
    app.cleanup_ctx.append(_usage_writer)


async def _usage_writer(app: web.Application) -> AsyncIterator[None]:
    usage = app[APIKEYS].usage
    usage.start()
    yield
    lost = await usage.close(CLOSE_TIMEOUT)
    if lost:
        log.error("stopping: %d API-key use rows could not be written to the store", lost)
