"""What the audit journal says of an exception: its metadata as plain JSON values, and a change as the fields it
changed, before and after. Built from the record only: the secret and its sealed bytes are not fields of
:class:`~broker.apikeys.model.ApiKeyException`, so they cannot end up here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from broker.apikeys.errors import InvalidExceptionError
from broker.apikeys.model import ApiKeyException

__all__ = ["MAX_NOTE", "check_note", "describe", "diff", "iso"]

MAX_NOTE = 200


def iso(at: datetime | None) -> str | None:
    """RFC 3339 in UTC (``2025-01-31T12:00:00Z``), or None."""
    if at is None:
        return None
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def describe(record: ApiKeyException) -> dict[str, Any]:
    """Every governed field of ``record`` as JSON values (the justification is cut by the audit scrub)."""
    return {
        "target": str(record.target),
        "wildcard_host": record.target.wildcard_host,
        "owner": record.owner,
        "contact": record.contact,
        "justification": record.justification,
        "ticket": record.ticket,
        "expires_at": iso(record.expires_at),
        "review_interval_days": record.review_interval.days,
        "allowed": [pattern.text for pattern in record.allowed],
        "presentation": f"{record.presentation.kind} {record.presentation.name}: {record.presentation.template}",
        "delivery": record.delivery.value,
        "state": record.state.value,
        "state_reason": record.state_reason,
        "last_review_at": iso(record.last_review_at),
        "last_review_by": record.last_review_by,
        "current_version": record.current_version,
    }


def diff(before: ApiKeyException, after: ApiKeyException) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields that differ, as ``(before, after)``."""
    old, new = describe(before), describe(after)
    changed = [name for name in new if old[name] != new[name]]
    return {name: old[name] for name in changed}, {name: new[name] for name in changed}


def check_note(value: str, what: str) -> str:
    """A reason or review note: 1 to :data:`MAX_NOTE` printable characters, not only spaces (shown in terminals
    and kept in the audit journal)."""
    if not value.strip() or len(value) > MAX_NOTE or not value.isprintable():
        raise InvalidExceptionError(
            f"{what} must be 1 to {MAX_NOTE} printable characters (no control characters, not only spaces)"
        )
    return value
