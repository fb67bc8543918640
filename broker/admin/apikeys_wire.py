"""The admin API's JSON for API-key exceptions: the documents the server sends and the client decodes, and the
request bodies the client builds and the server reads.

Times are RFC 3339 in UTC, as in :mod:`broker.admin.wire`. A target is the object the sidecars' catalog uses
(:mod:`broker.apikeys.grant`): ``{"scheme", "host", "port", "path_prefix", "wildcard_host"}``; a presentation is
``{"kind", "name", "template"}``. A secret travels in a request body only, as ``secret_b64`` (RFC 4648 §4 base64,
padded), never in a URL; and back only in the answer of ``reveal`` (``secret``). No other document has a field
for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from broker.admin.wire import (  # its member readers too: one way of reading an admin API document
    WireError,
    _field,
    _objects,
    _required_time,
    _strings,
    _time,
    encode_time,
)
from broker.apikeys.model import (
    ApiKeyException,
    Delivery,
    Presentation,
    SealedVersion,
    State,
    Status,
    Target,
    review_due,
    status_at,
)
from broker.apikeys.registry import Amendment, Revealed, Rotated
from broker.apikeys.report import Report, ReportRow, WorkloadUse
from broker.events.revocations import SubjectPattern

__all__ = [
    "ExceptionView",
    "RotatedView",
    "VersionView",
    "amendment_body",
    "decode_exception",
    "decode_exceptions",
    "decode_report",
    "decode_revealed",
    "decode_rotated",
    "exception_body",
    "exception_document",
    "exceptions_document",
    "presentation_document",
    "report_document",
    "revealed_document",
    "rotated_document",
    "target_document",
    "view_document",
]


@dataclass(frozen=True, slots=True)
class VersionView:
    """A stored secret version, by number (never its bytes)."""

    version: int
    kek_id: str
    created_at: datetime
    superseded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ExceptionView:
    """An exception as the admin API shows it: the record, its status and review due at the server's now."""

    record: ApiKeyException
    status: Status
    review_due: datetime
    versions: tuple[VersionView, ...] = ()


@dataclass(frozen=True, slots=True)
class RotatedView:
    """A rotation: the exception, the new version, the one it replaced, until when that stays usable, and whether
    the secret was withdrawn from the sidecars at once (a rotation grace shorter than the hold time)."""

    apikey: ExceptionView
    version: int
    superseded: int
    superseded_usable_until: datetime
    withdrawn: bool


# -- encoding (server) -----------------------------------------------------------------------------------------


def target_document(target: Target) -> dict[str, Any]:
    return {"scheme": target.scheme, "host": target.host, "port": target.port, "path_prefix": target.path_prefix,
            "wildcard_host": target.wildcard_host}  # fmt: skip


def presentation_document(presentation: Presentation) -> dict[str, Any]:
    return {"kind": presentation.kind, "name": presentation.name, "template": presentation.template}


def exception_body(record: ApiKeyException) -> dict[str, Any]:
    """The metadata members of ``POST /apikeys`` (the client adds ``secret_b64``)."""
    return {
        "name": record.name,
        "target": target_document(record.target),
        "owner": record.owner,
        "contact": record.contact,
        "justification": record.justification,
        "ticket": record.ticket,
        "expires_at": encode_time(record.expires_at),
        "review_interval_days": record.review_interval.days,
        "allowed": [pattern.text for pattern in record.allowed],
        "presentation": presentation_document(record.presentation),
        "delivery": record.delivery.value,
    }


def amendment_body(amendment: Amendment) -> dict[str, Any]:
    """The members of ``POST /apikeys/{name}/update`` for the fields ``amendment`` changes."""
    body: dict[str, Any] = {
        "owner": amendment.owner, "contact": amendment.contact, "justification": amendment.justification,
        "ticket": amendment.ticket, "expires_at": encode_time(amendment.expires_at),
        "review_interval_days": None if amendment.review_interval is None else amendment.review_interval.days,
        "allowed": None if amendment.allowed is None else [pattern.text for pattern in amendment.allowed],
        "presentation": None if amendment.presentation is None else presentation_document(amendment.presentation),
    }  # fmt: skip
    return {name: value for name, value in body.items() if value is not None}


def _document(
    record: ApiKeyException, status: Status, due: datetime, versions: Sequence[SealedVersion | VersionView] | None
) -> dict[str, Any]:
    document = {
        **exception_body(record),
        "placeholder": record.placeholder,
        "status": status.value,
        "review_due": encode_time(due),
        "state": record.state.value,
        "state_reason": record.state_reason,
        "last_review_at": encode_time(record.last_review_at),
        "last_review_by": record.last_review_by,
        "current_version": record.current_version,
        "revision": record.revision,
        "created_at": encode_time(record.created_at),
        "updated_at": encode_time(record.updated_at),
    }
    if versions is not None:
        document["versions"] = [
            {"version": v.version, "kek_id": v.kek_id, "created_at": encode_time(v.created_at),
             "superseded_at": encode_time(v.superseded_at)}
            for v in versions
        ]  # fmt: skip
    return document


def exception_document(
    record: ApiKeyException, now: datetime, versions: tuple[SealedVersion, ...] | None = None
) -> dict[str, Any]:
    """``record`` with its status and review due at ``now`` (and its versions, by number, for ``show``)."""
    return _document(record, status_at(record, now), review_due(record), versions)


def view_document(view: ExceptionView) -> dict[str, Any]:
    """``view`` as the server sent it (its status and review due at the server's now, its versions)."""
    return _document(view.record, view.status, view.review_due, view.versions or None)


def exceptions_document(records: tuple[ApiKeyException, ...], now: datetime) -> dict[str, Any]:
    return {"apikeys": [exception_document(record, now) for record in records]}


def rotated_document(rotated: Rotated, now: datetime) -> dict[str, Any]:
    return {
        "apikey": exception_document(rotated.record, now),
        "version": rotated.version,
        "superseded": rotated.superseded,
        "superseded_usable_until": encode_time(rotated.superseded_usable_until),
        "withdrawn": rotated.withdrawn,
    }


def revealed_document(revealed: Revealed) -> dict[str, Any]:
    return {"name": revealed.name, "version": revealed.version, "secret": revealed.secret}


def _row(row: ReportRow) -> dict[str, Any]:
    return {
        "name": row.name, "owner": row.owner, "contact": row.contact, "ticket": row.ticket,
        "status": row.status.value, "delivery": row.delivery.value, "reveal": row.reveal,
        "expires_at": encode_time(row.expires_at), "days_to_expiry": row.days_to_expiry,
        "review_due": encode_time(row.review_due), "review_overdue": row.review_overdue, "grantable": row.grantable,
        "current_version": row.current_version, "last_used_at": encode_time(row.last_used_at),
        "idle_days": row.idle_days, "unused": row.unused,
        "uses": [{"spiffe_id": u.spiffe_id, "last_used_at": encode_time(u.last_used_at), "count": u.count}
                 for u in row.uses],
    }  # fmt: skip


def report_document(report: Report) -> dict[str, Any]:
    return {"generated_at": encode_time(report.generated_at), "unused_days": report.unused_days,
            "apikeys": [_row(row) for row in report.rows]}  # fmt: skip


# -- decoding (client) -----------------------------------------------------------------------------------------


def _enum(document: Mapping[str, Any], name: str, kind: type[Status] | type[State] | type[Delivery]) -> Any:
    try:
        return kind(_field(document, name, str))
    except ValueError:
        raise WireError(f"member {name!r} is not a {kind.__name__}") from None


def _target(document: Mapping[str, Any]) -> Target:
    item = _field(document, "target", dict)
    return Target(_field(item, "host", str), _field(item, "port", int), _field(item, "path_prefix", str),
                  _field(item, "scheme", str), _field(item, "wildcard_host", bool))  # fmt: skip


def _presentation(document: Mapping[str, Any]) -> Presentation:
    item = _field(document, "presentation", dict)
    return Presentation(_field(item, "kind", str), _field(item, "name", str), _field(item, "template", str))


def _allowed(document: Mapping[str, Any]) -> tuple[SubjectPattern, ...]:
    try:
        return tuple(SubjectPattern.parse(text, all_of_trust_domain=True) for text in _strings(document, "allowed"))
    except ValueError:
        raise WireError("member 'allowed' is not a list of SPIFFE IDs or prefixes") from None


def _record(document: Mapping[str, Any]) -> ApiKeyException:
    return ApiKeyException(
        name=_field(document, "name", str), target=_target(document), owner=_field(document, "owner", str),
        contact=_field(document, "contact", str), justification=_field(document, "justification", str),
        ticket=_field(document, "ticket", str), expires_at=_required_time(document, "expires_at"),
        review_interval=timedelta(days=_field(document, "review_interval_days", int)), allowed=_allowed(document),
        presentation=_presentation(document), delivery=_enum(document, "delivery", Delivery),
        state=_enum(document, "state", State), state_reason=_field(document, "state_reason", str),
        last_review_at=_time(document, "last_review_at"), last_review_by=_field(document, "last_review_by", str),
        current_version=_field(document, "current_version", int), revision=_field(document, "revision", int),
        created_at=_time(document, "created_at"), updated_at=_time(document, "updated_at"),
    )  # fmt: skip


def decode_exception(document: Mapping[str, Any]) -> ExceptionView:
    versions = tuple(
        VersionView(
            _field(v, "version", int),
            _field(v, "kek_id", str),
            _required_time(v, "created_at"),
            _time(v, "superseded_at"),
        )
        for v in (_objects(document, "versions") if "versions" in document else [])
    )
    return ExceptionView(_record(document), _enum(document, "status", Status),
                         _required_time(document, "review_due"), versions)  # fmt: skip


def decode_exceptions(document: Mapping[str, Any]) -> list[ExceptionView]:
    return [decode_exception(item) for item in _objects(document, "apikeys")]


def decode_rotated(document: Mapping[str, Any]) -> RotatedView:
    return RotatedView(decode_exception(_field(document, "apikey", dict)), _field(document, "version", int),
                       _field(document, "superseded", int), _required_time(document, "superseded_usable_until"),
                       _field(document, "withdrawn", bool))  # fmt: skip


def decode_revealed(document: Mapping[str, Any]) -> Revealed:
    return Revealed(_field(document, "name", str), _field(document, "version", int), _field(document, "secret", str))


def _decode_row(item: Mapping[str, Any]) -> ReportRow:
    uses = tuple(WorkloadUse(_field(u, "spiffe_id", str), _required_time(u, "last_used_at"), _field(u, "count", int))
                 for u in _objects(item, "uses"))  # fmt: skip
    return ReportRow(
        name=_field(item, "name", str), owner=_field(item, "owner", str), contact=_field(item, "contact", str),
        ticket=_field(item, "ticket", str), status=_enum(item, "status", Status),
        delivery=_enum(item, "delivery", Delivery), expires_at=_required_time(item, "expires_at"),
        days_to_expiry=_field(item, "days_to_expiry", int), review_due=_required_time(item, "review_due"),
        review_overdue=_field(item, "review_overdue", bool), grantable=_field(item, "grantable", bool),
        current_version=_field(item, "current_version", int), last_used_at=_time(item, "last_used_at"),
        idle_days=_field(item, "idle_days", int), unused=_field(item, "unused", bool), uses=uses,
    )  # fmt: skip


def decode_report(document: Mapping[str, Any]) -> Report:
    return Report(_required_time(document, "generated_at"), _field(document, "unused_days", int),
                  tuple(_decode_row(item) for item in _objects(document, "apikeys")))  # fmt: skip
