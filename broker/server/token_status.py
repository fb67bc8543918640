"""``POST /revoke`` (RFC 7009) and ``POST /introspect`` (RFC 7662) on the token service's TLS app.

Both authenticate the caller as ``/token`` does, before the body is read (RFC 8705 §2.1 ``tls_client_auth`` with
an X.509-SVID; 401 ``invalid_client`` otherwise), read the same bounded form (:mod:`broker.server.request`), and
hand the rest to their framework-free endpoints (:mod:`broker.tokens.revoke`, :mod:`broker.tokens.introspection`).
Errors are rendered by the one error renderer (:mod:`broker.web.errors`). Answers carry ``Cache-Control:
no-store`` (RFC 7662 §2.2 responses describe a credential; RFC 6749 §5.1).

:func:`token_status_mounter` wires them with the replica's revocation view (:mod:`broker.server.revocations`),
which also becomes the token endpoint's quarantine hook and part of readiness, and advertises both endpoints in
the RFC 8414 metadata: ``revocation_endpoint``, ``introspection_endpoint`` and their
``..._auth_methods_supported`` (the token endpoint's methods: ``tls_client_auth``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from broker.audit.events import AuditEvent
from broker.identity.spiffeid import SpiffeId
from broker.oauth.response import NO_STORE
from broker.server.app import add_readiness
from broker.server.handlers import advertise
from broker.server.issued import IssuedTokenCheck
from broker.server.request import read_form, request_context
from broker.server.revocations import ReplicaRevocations
from broker.server.state import CONFIG, SERVICE
from broker.tokens.introspection import IntrospectionAccess, IntrospectionEndpoint
from broker.tokens.keys import KeyStore
from broker.tokens.revoke import RevocationEndpoint

__all__ = ["INTROSPECTION", "REVOCATION", "add_token_status_routes", "introspect", "revoke", "token_status_mounter"]

REVOCATION = web.AppKey("revocation_endpoint", RevocationEndpoint)
INTROSPECTION = web.AppKey("introspection_endpoint", IntrospectionEndpoint)


async def revoke(request: web.Request) -> web.Response:
    """RFC 7009 §2.1; §2.2: 200 with no content whether or not anything was revoked."""
    client = request.app[SERVICE].client_of(request_context(request))  # before the body is read
    form = await read_form(request, max_body=request.app[CONFIG].max_body)
    await request.app[REVOCATION].handle(form, client)
    return web.Response(status=200, headers=NO_STORE)


async def introspect(request: web.Request) -> web.Response:
    """RFC 7662 §2.1; the §2.2 JSON response."""
    endpoint = request.app[INTROSPECTION]
    client = request.app[SERVICE].client_of(request_context(request))  # before the body is read
    endpoint.authorize(client)
    form = await read_form(request, max_body=request.app[CONFIG].max_body)
    return web.json_response(await endpoint.handle(form, client), headers=NO_STORE)


def add_token_status_routes(
    app: web.Application, *, revocation: RevocationEndpoint, introspection: IntrospectionEndpoint
) -> None:
    """Mount ``/revoke`` and ``/introspect`` on the token app (before it starts) and advertise them."""
    app[REVOCATION], app[INTROSPECTION] = revocation, introspection
    app.router.add_post("/revoke", revoke)
    app.router.add_post("/introspect", introspect)
    issuer, methods = app[CONFIG].issuer, list(app[SERVICE].transport_auth_methods)
    advertise(
        app,
        {
            "revocation_endpoint": f"{issuer}/revoke",
            "revocation_endpoint_auth_methods_supported": methods,
            "introspection_endpoint": f"{issuer}/introspect",
            "introspection_endpoint_auth_methods_supported": methods,
        },
    )


def token_status_mounter(
    *,
    revocations: ReplicaRevocations,
    keys: KeyStore,
    admins: frozenset[SpiffeId],
    access: IntrospectionAccess,
    record_now: Callable[[AuditEvent], Awaitable[object]] | None,
    clock: Callable[[], float],
) -> Callable[[web.Application], None]:
    """What the stateful service mounts: quarantine hook, readiness, ``/revoke`` and ``/introspect``."""

    def mount(app: web.Application) -> None:
        endpoint = app[SERVICE]
        endpoint.use_quarantine(revocations)
        add_readiness(app, revocations.problem)
        tokens = IssuedTokenCheck(issuer=app[CONFIG].issuer, keys=keys, clock=clock)
        revocation = RevocationEndpoint(
            client_auth=endpoint, tokens=tokens, revocations=revocations, admins=admins, record_now=record_now
        )
        introspection = IntrospectionEndpoint(
            client_auth=endpoint, access=access, tokens=tokens, revocations=revocations
        )
        add_token_status_routes(app, revocation=revocation, introspection=introspection)

    return mount
