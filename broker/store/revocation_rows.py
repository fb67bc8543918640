"""The revocation log's rows, shared by the SQLite and PostgreSQL stores; the read checks, shared by all three.

A row is ``(seq, kind, target, body, cutoff_until, kept_until, created_at)``:

* ``kind`` is the feed's entry type (``token.revoked``, ``subject.quarantined``, ``subject.released``,
  ``key.revoked``, ``exception.withdrawn``) and ``target`` what the entry names: the ``jti``, the subject
  pattern's text, the ``kid``, or the API-key exception's name.
* ``body`` is the event as JSON with its times in exact microseconds since the epoch, so a store gives back the
  event it was given. The feed's wire form (:func:`~broker.events.revocations.entry_to_wire`) has whole seconds
  and no ``reason``; a quarantine's reason is kept here because ``quarantine list`` shows it.
* ``cutoff_until`` (quarantines only) and ``kept_until`` (None: until released) are columns, because a
  :class:`~broker.events.revocations.SubjectReleased` and :meth:`prune` work on them in SQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.errors import StoreCorruptError
from broker.events.revocations import (
    ExceptionWithdrawn,
    KeyRevoked,
    RevocationEvent,
    SubjectPattern,
    SubjectQuarantined,
    SubjectReleased,
    TokenRevoked,
    kept_until,
)
from broker.identity.errors import InvalidSpiffeIdError
from broker.tokens.keystore import check_instant
from broker.tokens.revocation import LogAhead, LogBehind

__all__ = ["QUARANTINED", "RELEASED", "WITHDRAWN", "Row", "check_position", "check_read", "from_body", "to_row"]

QUARANTINED = "subject.quarantined"
RELEASED = "subject.released"
WITHDRAWN = "exception.withdrawn"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Row:
    kind: str
    target: str
    body: str
    cutoff_until: datetime | None
    kept_until: datetime | None  # at append; a release's grows to the cutoffs of the quarantines it ends


def _micros(at: datetime) -> int:
    delta = check_instant(at) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _time(value: Any) -> datetime:
    if type(value) is not int:
        raise ValueError("a time is an integer number of microseconds")
    return _EPOCH + timedelta(microseconds=value)


def to_row(event: RevocationEvent) -> Row:
    """``event``'s row; ValueError (nothing written) if one of its times is naive."""
    kind, target, fields = _fields(event)
    cutoff = event.cutoff_until if isinstance(event, SubjectQuarantined) else None
    return Row(kind, target, json.dumps(fields, separators=(",", ":")), cutoff, kept_until(event))


def _fields(event: RevocationEvent) -> tuple[str, str, dict[str, Any]]:
    """``(kind, target, body fields)`` of ``event``: times as exact microseconds."""
    if isinstance(event, TokenRevoked):
        return "token.revoked", event.jti, {"jti": event.jti, "exp": _micros(event.expires_at)}
    if isinstance(event, KeyRevoked):
        return "key.revoked", event.kid, {"kid": event.kid, "exp": _micros(event.expires_at)}
    if isinstance(event, ExceptionWithdrawn):
        return WITHDRAWN, event.name, {"name": event.name, "at": _micros(event.at), "until": _micros(event.until)}
    if isinstance(event, SubjectQuarantined):
        fields = {
            "pattern": event.pattern.text,
            "at": _micros(event.at),
            "until": None if event.until is None else _micros(event.until),
            "cutoff_until": _micros(event.cutoff_until),
            "reason": event.reason,
        }
        return QUARANTINED, event.pattern.text, fields
    return RELEASED, event.pattern.text, {"pattern": event.pattern.text, "at": _micros(event.at)}


def from_body(seq: int, kind: str, body: str) -> RevocationEvent:
    """The event a row holds; :class:`StoreCorruptError` for a row this broker did not write."""
    try:
        fields = json.loads(body)
        if kind == "token.revoked":
            return TokenRevoked(fields["jti"], _time(fields["exp"]))
        if kind == "key.revoked":
            return KeyRevoked(fields["kid"], _time(fields["exp"]))
        if kind == WITHDRAWN:
            return ExceptionWithdrawn(fields["name"], _time(fields["at"]), _time(fields["until"]))
        pattern = SubjectPattern.parse(fields["pattern"], all_of_trust_domain=True)
        if kind == QUARANTINED:
            until = None if fields["until"] is None else _time(fields["until"])
            return SubjectQuarantined(
                pattern, _time(fields["at"]), until, _time(fields["cutoff_until"]), str(fields["reason"])
            )
        if kind == RELEASED:
            return SubjectReleased(pattern, _time(fields["at"]))
    except (ValueError, KeyError, TypeError, InvalidSpiffeIdError):
        pass
    raise StoreCorruptError(f"revocation log entry {seq} is not one this spiffe-broker wrote: restore the store")


def check_read(after: int, limit: int) -> None:
    if after < 0 or limit < 1:
        raise ValueError("after is at least 0 and limit at least 1")


def check_position(after: int, head: int, horizon: int) -> None:
    """:class:`LogBehind` if entries after ``after`` were pruned, :class:`LogAhead` if it is beyond ``head``."""
    if after < horizon:
        raise LogBehind(f"entries after {after} were pruned (horizon {horizon}): take a snapshot")
    if after > head:
        raise LogAhead(f"seq {after} is beyond the log's head {head}")
