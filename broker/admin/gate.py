"""The admin gate: who may call, and the audit record of every call, written before its answer is sent.

Every request below ``/admin/v1`` (an unknown path too) goes through :meth:`AdminGate.serve`, in this order:

1. **Authenticate**, before any body byte is read, as ``/token`` does (RFC 8705 §2.1 ``tls_client_auth``, through
   :class:`~broker.tokens.client_auth.mtls.TlsClientAuth`): the TLS handshake verified the client chain against
   the trust bundles; the chain is then verified again against the bundle of the trust domain its SPIFFE ID
   names (X509-SVID §5). No certificate, or one that is not an acceptable X.509-SVID: ``invalid_client`` (401).
   A valid SPIFFE ID that is not exactly one of the configured admins: ``access_denied`` (403).
2. **Read the input** (:mod:`broker.admin.inputs`) and let the route check its values (``describe``): 400.
3. A refusal at 1 or 2 (or an unknown endpoint, 404/405) is recorded ``refused`` and then answered.
4. **A read** (GET): performed, recorded ``served`` (with its filters), then answered.
5. **A change** (POST): recorded ``requested`` *before* it is made, then made, then recorded ``done`` (or
   ``refused`` if the operation refused with an admin or OAuth error, ``failed`` if it broke, a store error
   included: then whether it happened is unknown), then answered.

Fail closed: when the audit journal does not take a record, the call is answered ``audit_unavailable`` (503)
and, because each record is written before what it covers is released, nothing was done or disclosed: not a
refusal's reason, not a read's data, not a change (its ``requested`` record comes first). The one exception is
a change that was made and whose ``done`` record then failed: it cannot be undone, so it is reported truthfully,
200 with its result and ``"audited": false``, and an ERROR line. Why two records for a change: recording only
after it could leave a change with no trace at all (the journal failing in between); recording only before
would leave every refused change looking like one that happened. With both, the journal holds every change made
at least as ``requested`` (with its admin and target), and a ``requested`` without an outcome tells an auditor
to read the outcome from the state itself (the keyring's own events).

A change runs as a task shielded from the request: a client that disconnects cannot cancel it between the
change and its ``done`` record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from broker.admin.errors import AdminMethodNotAllowedError, AdminNotFoundError, AuditUnavailableError
from broker.admin.inputs import MAX_ADMIN_BODY, read_json_object, read_query
from broker.admin.ports import AdminAudit, Outcome
from broker.admin.routes import AdminInput, AdminOutput, AdminRoute
from broker.errors import AccessDeniedError, BrokerError, OAuthError, StoreError
from broker.identity.bundle import X509BundleSet
from broker.identity.spiffeid import SpiffeId
from broker.oauth.response import NO_STORE, public_error
from broker.tokens.client_auth import RequestContext
from broker.tokens.client_auth.mtls import TlsClientAuth
from broker.web.access_log import route_of
from broker.web.errors import render_error

__all__ = ["UNKNOWN_PATH", "AdminGate"]

log = logging.getLogger(__name__)

UNKNOWN_PATH = "/admin/v1/*"  # what an audit record names for a path no admin route matched


@dataclass
class _Call:
    method: str
    path: str
    actor: SpiffeId | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class AdminGate:
    """Authenticates admin calls against ``admins`` and ``bundles()``, and records each one in ``audit``."""

    def __init__(
        self,
        *,
        admins: frozenset[SpiffeId],
        bundles: Callable[[], X509BundleSet],
        audit: AdminAudit,
        max_body: int = MAX_ADMIN_BODY,
    ) -> None:
        self.admins = admins
        self._client_auth = TlsClientAuth(bundles)
        self._audit = audit
        self._max_body = max_body
        self._changes: set[asyncio.Task[web.Response]] = set()

    async def serve(self, route: AdminRoute | None, request: web.Request) -> web.Response:
        """Answer one admin request (``route`` None: no admin route matched it); see the module docstring."""
        call = _Call(request.method, UNKNOWN_PATH if route is None else route_of(request))
        try:
            call.actor = self._authenticate(request)
            if call.actor not in self.admins:
                raise AccessDeniedError(f"{call.actor} is not an admin of this token service (see [admin] spiffe_ids)")
            if route is None:
                raise _unmatched(request)
            given = await self._read(route, request, call.actor)
            call.detail = route.describe(given)
        except BrokerError as exc:
            return await self._refuse(call, exc)
        if route.changes_state:
            await self._record(call, Outcome.REQUESTED, call.detail)  # AuditUnavailableError: nothing done
            task = asyncio.ensure_future(self._perform(call, route, given))
            self._changes.add(task)
            task.add_done_callback(self._forget)
            return await asyncio.shield(task)
        return await self._perform(call, route, given)

    def _forget(self, task: asyncio.Task[web.Response]) -> None:
        self._changes.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here too: a caller that went away never awaits it

    def _authenticate(self, request: web.Request) -> SpiffeId:
        """The SPIFFE ID of the client's X.509-SVID, verified per trust domain; ``invalid_client`` otherwise."""
        transport = request.transport
        tls = transport.get_extra_info("ssl_object") if transport is not None else None
        if not isinstance(tls, ssl.SSLObject | ssl.SSLSocket):
            tls = None
        return self._client_auth.authenticate(RequestContext(tls=tls)).spiffe_id

    async def _read(self, route: AdminRoute, request: web.Request, actor: SpiffeId) -> AdminInput:
        if route.changes_state:
            limit = self._max_body if route.max_body is None else route.max_body
            params: Mapping[str, Any] = await read_json_object(request, fields=route.params, max_body=limit)
        else:
            params = read_query(request, names=route.params)
        return AdminInput(actor=actor, path=dict(request.match_info), params=params)

    async def _perform(self, call: _Call, route: AdminRoute, given: AdminInput) -> web.Response:
        try:
            output = await route.operation(given)
        except BrokerError as exc:
            if isinstance(exc, OAuthError) and not isinstance(exc, StoreError):
                return await self._refuse(call, exc)  # the operation refused: nothing was done
            await self._record_failure(call, public_error(exc).error)  # e.g. the store went away: effect unknown
            return render_error(exc)
        except Exception:
            await self._record_failure(call, "server_error")
            raise  # the error middleware logs its frames and answers server_error
        return await self._answer(call, route, output)

    async def _answer(self, call: _Call, route: AdminRoute, output: AdminOutput) -> web.Response:
        detail = {**call.detail, **output.audit}
        if not route.changes_state:
            await self._record(call, Outcome.SERVED, detail)  # AuditUnavailableError: nothing is disclosed
            return web.json_response(output.document, headers=NO_STORE)
        try:
            await self._record(call, Outcome.DONE, detail)
            audited = True
        except AuditUnavailableError:
            log.error("admin %s %s by %s was DONE but its outcome is not in the audit journal (its request is)",
                      call.method, call.path, call.actor)  # fmt: skip
            audited = False
        return web.json_response({**output.document, "audited": audited}, headers=NO_STORE)

    async def _refuse(self, call: _Call, exc: BrokerError) -> web.Response:
        shown = public_error(exc)
        try:
            await self._record(call, Outcome.REFUSED, {**call.detail, "error": shown.error, "status": shown.status})
        except AuditUnavailableError as unavailable:
            return render_error(unavailable)
        return render_error(exc)

    async def _record_failure(self, call: _Call, error: str) -> None:
        with contextlib.suppress(AuditUnavailableError):  # answered with an error anyway; _record logged it
            await self._record(call, Outcome.FAILED, {**call.detail, "error": error})

    async def _record(self, call: _Call, outcome: Outcome, detail: dict[str, Any]) -> None:
        """One audit record, or :class:`AuditUnavailableError` (whatever the journal raised, logged by type)."""
        actor = None if call.actor is None else str(call.actor)
        try:
            await self._audit.record(actor, call.method, call.path, str(outcome), detail)
        except Exception as exc:
            log.error("admin %s %s by %s: audit record %s failed (%s)",
                      call.method, call.path, actor or "-", outcome, type(exc).__name__)  # fmt: skip
            raise AuditUnavailableError() from None
        log.info("admin %s %s by %s: %s %s", call.method, call.path, actor or "-", outcome, detail.get("error", ""))


def _unmatched(request: web.Request) -> BrokerError:
    exc = request.match_info.http_exception
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return AdminMethodNotAllowedError.allowing(set(exc.allowed_methods))
    return AdminNotFoundError("no such admin endpoint: see the admin API in docs/operations.md")
