"""Selecting audit records: by event name (exact, or a family ``token.*``) and by the SPIFFE ID they name.

Shared by ``spiffe-broker audit tail`` and the admin API's ``GET /admin/v1/audit``, so both select alike.
"""

from __future__ import annotations

import json
from typing import Any

from broker.audit.journal import AuditRecord

__all__ = ["SPIFFE_ID_FIELDS", "body_of", "event_matches", "spiffe_ids_in"]

SPIFFE_ID_FIELDS = ("sub", "client_id", "spiffe_id", "actor")  # body fields that name a SPIFFE ID


def event_matches(event: str, pattern: str) -> bool:
    """``pattern`` is an event name, or a family ending in ``*`` (``key.*``)."""
    return event.startswith(pattern[:-1]) if pattern.endswith("*") else event == pattern


def body_of(record: AuditRecord) -> Any:
    """The record's JSON body; a body that is not JSON (a damaged record) as text."""
    try:
        return json.loads(record.body)
    except ValueError:
        return record.body.decode("utf-8", "replace")


def spiffe_ids_in(record: AuditRecord) -> set[str]:
    """The SPIFFE IDs the record names (subject, client, refused caller, admin actor)."""
    body = body_of(record)
    return {str(body[f]) for f in SPIFFE_ID_FIELDS if isinstance(body, dict) and body.get(f)}
