"""Admin endpoint of the audit journal (issue 9 item 4): ``GET /admin/v1/audit``, for ``audit tail`` and a SIEM.

Query parameters, each optional and given at most once:

* ``since``: a sequence number; records with a greater ``seq`` are returned (default 0: from the first). The
  answer's ``next_since`` is the ``since`` of the next page, so a follower never misses or repeats a record.
* ``limit``: 1 to :data:`MAX_LIMIT` records (default :data:`DEFAULT_LIMIT`).
* ``event``: only records of this event name (1 to 100 printable ASCII characters, as the journal allows).
* ``spiffe_id``: only records about this SPIFFE ID (a valid one, SPIFFE ID §2).

Reading the journal is itself audited (``served``, with the filters), like every admin call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.admin.ports import AuditQuery, AuditReader
from broker.admin.routes import AdminInput, AdminOutput, AdminRoute
from broker.admin.wire import audit_page_document
from broker.audit.journal import MAX_EVENT_LENGTH
from broker.errors import InvalidRequestError
from broker.identity.errors import InvalidSpiffeIdError
from broker.identity.spiffeid import SpiffeId

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "audit_query", "audit_routes"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_MAX_SEQ = 2**63 - 1
_PARAMS = frozenset({"since", "limit", "event", "spiffe_id"})


def _number(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 19) or not low <= int(text) <= high:
        raise InvalidRequestError(f"{name} must be a whole number from {low} to {high}")
    return int(text)


def audit_query(given: AdminInput) -> AuditQuery:
    """The query's filters, checked; ``invalid_request`` names the first bad one."""
    params = given.params
    event = params.get("event")
    if event is not None and not (0 < len(event) <= MAX_EVENT_LENGTH and event.isascii() and event.isprintable()):
        raise InvalidRequestError(f"event must be 1 to {MAX_EVENT_LENGTH} printable ASCII characters")
    spiffe_id = params.get("spiffe_id")
    try:
        subject = None if spiffe_id is None else SpiffeId.parse(spiffe_id)
    except InvalidSpiffeIdError:
        raise InvalidRequestError("spiffe_id is not a valid SPIFFE ID (spiffe://trust-domain/path)") from None
    return AuditQuery(
        after=_number(params, "since", 0, 0, _MAX_SEQ),
        limit=_number(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        event=event,
        spiffe_id=subject,
    )


def _describe(given: AdminInput) -> dict[str, Any]:
    query = audit_query(given)
    detail: dict[str, Any] = {"since": query.after, "limit": query.limit}
    if query.event is not None:
        detail["event"] = query.event
    if query.spiffe_id is not None:
        detail["spiffe_id"] = str(query.spiffe_id)
    return detail


def audit_routes(reader: AuditReader) -> tuple[AdminRoute, ...]:
    async def read(given: AdminInput) -> AdminOutput:
        query = audit_query(given)
        records = list(await reader.read(query))
        return AdminOutput(audit_page_document(records, query.after), {"records": len(records)})

    return (AdminRoute("GET", "/audit", read, params=_PARAMS, describe=_describe),)
