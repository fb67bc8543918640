"""The admin API as an aiohttp sub-application, mounted at ``/admin/v1`` on the token service's TLS listener.

Routes (JSON in and out, ``Cache-Control: no-store``; every one behind :class:`~broker.admin.gate.AdminGate`)::

    GET  /admin/v1/keys                   the signing keys: kid, state, timestamps, kek_id (never key material)
    POST /admin/v1/keys/rotate            {"reason"?}  rotate now; what moved
    POST /admin/v1/keys/{kid}/revoke      {"reason"?}  emergency revoke; the new active kid and the blast radius
    GET  /admin/v1/store                  engine, redacted URL, schema version and the latest this build knows
    GET  /admin/v1/audit?since=&limit=&event=&spiffe_id=     audit records after ``since``
    GET  /admin/v1/quarantines            the quarantines in force (:mod:`broker.admin.quarantine`)
    POST /admin/v1/quarantines            {"pattern", "reason", "until"?, "all_of_trust_domain"?}  quarantine now
    POST /admin/v1/quarantines/release    {"pattern", "reason"?}  end the quarantine of exactly that pattern
    GET  /admin/v1/clients                the client registry (:mod:`broker.admin.clients`)
    GET  /admin/v1/clients/show?client_id=            one registered client
    POST /admin/v1/clients                {"client_id", "spiffe_id", "jwks" | "jwks_uri", ...}  register one
    POST /admin/v1/clients/disable|enable|remove      {"client_id", "reason"?}
    GET  /admin/v1/apikeys                governed API-key exceptions (:mod:`broker.admin.apikeys`)
    POST /admin/v1/apikeys                {"name", "target", ..., "secret_b64"}  register one (the secret in the body)
    GET  /admin/v1/apikeys/{name}         one exception and its versions
    POST /admin/v1/apikeys/{name}/update|rotate|suspend|resume|revoke|review|reveal
    GET  /admin/v1/apikeys-report?unused_days=        the governance report
    GET  /admin/v1/clock-drift?limit=     this replica's worst client clock drifts (:mod:`broker.admin.clock_drift`)

The listener requests client certificates without requiring them (its JWKS and metadata are public), so the
gate, not the handshake, refuses an admin call without one (401). A path below the prefix that matches no route
passes the gate as well (the sub-application's middleware), so nothing below ``/admin/v1`` answers an
unauthenticated caller with more than a 401, and every such call is audited.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Handler

from broker.admin.apikeys import apikey_routes
from broker.admin.audit_log import audit_routes
from broker.admin.clients import client_routes
from broker.admin.clock_drift import drift_routes
from broker.admin.gate import AdminGate
from broker.admin.inputs import MAX_ADMIN_BODY
from broker.admin.keys import key_routes
from broker.admin.ports import (
    AdminAudit,
    ApiKeyAdmin,
    AuditReader,
    ClientAdmin,
    DriftView,
    KeyAdmin,
    QuarantineAdmin,
    StoreInfo,
)
from broker.admin.quarantine import quarantine_routes
from broker.admin.routes import AdminRoute
from broker.admin.store_status import store_routes
from broker.identity.bundle import X509BundleSet
from broker.identity.spiffeid import SpiffeId
from broker.web.errors import error_middleware

__all__ = ["ADMIN_PREFIX", "GATE", "add_admin_routes", "build_admin_app"]

ADMIN_PREFIX = "/admin/v1"
GATE = web.AppKey("admin_gate", AdminGate)


def build_admin_app(gate: AdminGate, routes: Iterable[AdminRoute]) -> web.Application:
    """A sub-application serving ``routes`` through ``gate`` (mount it with ``add_subapp(ADMIN_PREFIX, ...)``)."""

    @web.middleware
    async def unmatched(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.http_exception is None:
            return await handler(request)
        return await gate.serve(None, request)  # 404 or 405, after authentication and audit

    app = web.Application(middlewares=[error_middleware, unmatched])
    app[GATE] = gate
    for route in routes:
        app.router.add_route(route.method, route.path, _handler(gate, route))
    return app


def _handler(gate: AdminGate, route: AdminRoute) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await gate.serve(route, request)

    return handle


def add_admin_routes(
    app: web.Application,
    *,
    admins: frozenset[SpiffeId],
    bundles: Callable[[], X509BundleSet],
    keys: KeyAdmin,
    store: StoreInfo,
    audit_reader: AuditReader,
    audit: AdminAudit,
    quarantines: QuarantineAdmin | None = None,
    clients: ClientAdmin | None = None,
    apikeys: ApiKeyAdmin | None = None,
    drift: DriftView | None = None,
    replica: str | None = None,
    extra_routes: Iterable[AdminRoute] = (),
    max_body: int = MAX_ADMIN_BODY,
) -> AdminGate:
    """Mount the admin API on ``app`` (the token service's TLS app, before it starts) at ``/admin/v1``.

    ``bundles`` returns the current X.509 trust bundles (the token service's source, ``source.x509_bundles``);
    ``admins`` the exact SPIFFE IDs allowed (empty: every call is refused, 403, and audited); ``quarantines``
    adds the quarantine routes, ``clients`` the client registry's, ``apikeys`` the API-key exceptions',
    ``drift`` the clock-drift route (this replica's tracker, named ``replica`` in its answers). Returns the gate.
    """
    gate = AdminGate(admins=admins, bundles=bundles, audit=audit, max_body=max_body)
    routes = (*key_routes(keys), *store_routes(store), *audit_routes(audit_reader))
    if quarantines is not None:
        routes += quarantine_routes(quarantines)
    if clients is not None:
        routes += client_routes(clients)
    if apikeys is not None:
        routes += apikey_routes(apikeys)
    if drift is not None:
        routes += drift_routes(drift, replica)
    routes += tuple(extra_routes)
    app.add_subapp(ADMIN_PREFIX, build_admin_app(gate, routes))
    return gate
