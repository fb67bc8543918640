"""Admin endpoints of governed API-key exceptions (issue 12; :mod:`broker.apikeys.registry`, docs/exceptions.md).

::

    GET  /admin/v1/apikeys                        every exception (revoked ones too) with its status now
    POST /admin/v1/apikeys                        {"name", "target", "owner", "contact", "justification", "ticket",
                                                   "expires_at", "review_interval_days"?, "allowed",
                                                   "presentation", "delivery"?, "secret_b64"}     register (v1)
    GET  /admin/v1/apikeys/{name}                 one exception, with its versions (numbers, KEK ids, times)
    POST /admin/v1/apikeys/{name}/update          {"owner"?, "contact"?, "justification"?, "ticket"?,
                                                   "expires_at"?, "review_interval_days"?, "allowed"?,
                                                   "presentation"?, "reason"?}
    POST /admin/v1/apikeys/{name}/rotate          {"secret_b64"}        the next version
    POST /admin/v1/apikeys/{name}/suspend         {"reason"}            no grant until resumed; withdrawn now
    POST /admin/v1/apikeys/{name}/resume          {"reason"?}
    POST /admin/v1/apikeys/{name}/revoke          {"reason"}            final; withdrawn now
    POST /admin/v1/apikeys/{name}/review          {"note"}              reviewed now by the caller
    POST /admin/v1/apikeys/{name}/reveal          {"reason"}            the current secret, in this answer only
    GET  /admin/v1/apikeys-report?unused_days=N   the governance report (:mod:`broker.apikeys.report`)

The name travels in the path, unlike a ``client_id`` or a SPIFFE ID pattern (:mod:`broker.admin.clients`): it is a
DNS label, which needs no percent-encoding. The secret travels in a JSON body only (``secret_b64``), never in a URL,
which proxies and access logs keep. ``reveal`` is a POST, so the gate records it ``requested`` before the secret
is read and ``done`` after (:mod:`broker.admin.gate`), and the registry's ``apikey.revealed`` record is written
before the answer; every answer here is ``Cache-Control: no-store``.

What the audit records say of a call (``describe`` and the outcome's additions) is the name, the metadata, the
reason or note and the version numbers: never ``secret_b64``, never the revealed secret. Refusals, each changing
nothing (:mod:`broker.apikeys.errors`): ``invalid_exception`` (400, naming the member or rule),
``unknown_exception`` (404), ``exception_exists`` (409), ``exception_conflict`` (409: changed meanwhile, revoked,
not suspended), ``secret_unavailable`` (500: a version this replica's KEKs do not open).
"""

from __future__ import annotations

from typing import Any

from broker.admin.apikeys_input import ADD_MEMBERS, AMEND_MEMBERS, amendment, name_of, registration, secret_of
from broker.admin.apikeys_wire import (
    exception_document,
    exceptions_document,
    report_document,
    revealed_document,
    rotated_document,
)
from broker.admin.ports import ApiKeyAdmin
from broker.admin.routes import AdminInput, AdminOutput, AdminRoute, Operation
from broker.apikeys.changes import check_note, describe
from broker.apikeys.report import DEFAULT_UNUSED_DAYS, MAX_DAYS
from broker.apikeys.sealing import secret_text
from broker.errors import InvalidRequestError

__all__ = ["ADD_MAX_BODY", "apikey_routes"]

ADD_MAX_BODY = 32 * 1024  # a secret of 4096 bytes in base64, a justification of 2000 characters, 100 allowed IDs
SECRET_MAX_BODY = 8 * 1024
_NOTE = {"suspend": "reason", "resume": "reason", "revoke": "reason", "review": "note", "reveal": "reason"}
_REQUIRED = frozenset({"suspend", "revoke", "review", "reveal"})


def _note(given: AdminInput, member: str, *, required: bool) -> str | None:
    value = given.params.get(member)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(f"{member} is required: why, for the audit journal (1-200 printable characters)")
    return check_note(value, member)


def _unused_days(given: AdminInput) -> int:
    text = given.params.get("unused_days")
    if text is None:
        return DEFAULT_UNUSED_DAYS
    if not (text.isascii() and text.isdigit() and len(text) <= 4) or not 1 <= int(text) <= MAX_DAYS:
        raise InvalidRequestError(f"unused_days must be a whole number from 1 to {MAX_DAYS}")
    return int(text)


def apikey_routes(apikeys: ApiKeyAdmin) -> tuple[AdminRoute, ...]:
    def describe_add(given: AdminInput) -> dict[str, Any]:
        secret_text(secret_of(given.params))  # a bad secret or record is refused before "requested" is recorded
        now = apikeys.now()
        record = apikeys.rules.check(registration(given.params, now, apikeys.rules.default_review_interval), now)
        return {"name": record.name, **describe(record)}

    def describe_name(given: AdminInput) -> dict[str, Any]:
        return {"name": name_of(given)}

    def describe_rotate(given: AdminInput) -> dict[str, Any]:
        secret_text(secret_of(given.params))
        return {"name": name_of(given)}

    def describe_update(given: AdminInput) -> dict[str, Any]:
        found = amendment(given.params, apikeys.now())
        detail = {
            "name": name_of(given),
            "changes": sorted(f for f in AMEND_MEMBERS if given.params.get(f) is not None),
        }
        return {**detail, "expires_at": None if found.expires_at is None else found.expires_at.isoformat()}

    def describe_note(action: str) -> Any:
        def detail(given: AdminInput) -> dict[str, Any]:
            note = _note(given, _NOTE[action], required=action in _REQUIRED)
            return {"name": name_of(given), **({} if note is None else {_NOTE[action]: note})}

        return detail

    async def list_all(given: AdminInput) -> AdminOutput:
        records = await apikeys.list_all()
        return AdminOutput(exceptions_document(records, apikeys.now()), {"apikeys": len(records)})

    async def show(given: AdminInput) -> AdminOutput:
        name = name_of(given)
        record = await apikeys.get(name)
        return AdminOutput(exception_document(record, apikeys.now(), await apikeys.versions(name)))

    async def add(given: AdminInput) -> AdminOutput:
        record = registration(given.params, apikeys.now(), apikeys.rules.default_review_interval)
        added = await apikeys.add(record, secret_of(given.params), str(given.actor))
        return AdminOutput(exception_document(added, apikeys.now()), {"current_version": added.current_version})

    async def update(given: AdminInput) -> AdminOutput:
        reason = _note(given, "reason", required=False)
        changed = await apikeys.update(name_of(given), amendment(given.params, apikeys.now()), str(given.actor), reason)
        return AdminOutput(exception_document(changed, apikeys.now()), {"revision": changed.revision})

    async def rotate(given: AdminInput) -> AdminOutput:
        rotated = await apikeys.rotate(name_of(given), secret_of(given.params), str(given.actor))
        audit = {"version": rotated.version, "superseded": rotated.superseded, "withdrawn": rotated.withdrawn}
        return AdminOutput(rotated_document(rotated, apikeys.now()), audit)

    def state_change(action: str) -> Operation:
        async def change(given: AdminInput) -> AdminOutput:
            name, actor = name_of(given), str(given.actor)
            note = _note(given, _NOTE[action], required=action in _REQUIRED)
            if action == "resume":
                record = await apikeys.resume(name, actor, note)
            elif action == "review":
                record = await apikeys.review(name, actor, note or "")
            else:
                record = await (apikeys.suspend if action == "suspend" else apikeys.revoke)(name, note or "", actor)
            return AdminOutput(exception_document(record, apikeys.now()), {"state": record.state.value})

        return change

    async def reveal(given: AdminInput) -> AdminOutput:
        revealed = await apikeys.reveal(name_of(given), str(given.actor), _note(given, "reason", required=True) or "")
        return AdminOutput(revealed_document(revealed), {"version": revealed.version})

    async def report(given: AdminInput) -> AdminOutput:
        found = await apikeys.report(_unused_days(given))
        return AdminOutput(report_document(found), {"apikeys": len(found.rows)})

    def notes(action: str) -> frozenset[str]:
        return frozenset({_NOTE[action]})

    return (
        AdminRoute("GET", "/apikeys", list_all),
        AdminRoute("POST", "/apikeys", add, params=ADD_MEMBERS, describe=describe_add, max_body=ADD_MAX_BODY),
        AdminRoute("GET", "/apikeys/{name}", show, describe=describe_name),
        AdminRoute("POST", "/apikeys/{name}/update", update, params=AMEND_MEMBERS, describe=describe_update,
                   max_body=ADD_MAX_BODY),
        AdminRoute("POST", "/apikeys/{name}/rotate", rotate, params=frozenset({"secret_b64"}),
                   describe=describe_rotate, max_body=SECRET_MAX_BODY),
        *(AdminRoute("POST", f"/apikeys/{{name}}/{action}", state_change(action), params=notes(action),
                     describe=describe_note(action)) for action in ("suspend", "resume", "revoke", "review")),
        AdminRoute("POST", "/apikeys/{name}/reveal", reveal, params=notes("reveal"), describe=describe_note("reveal")),
        AdminRoute("GET", "/apikeys-report", report, params=frozenset({"unused_days"}),
                   describe=lambda given: {"unused_days": _unused_days(given)}),
    )  # fmt: skip
