"""The API-key exception registry's rows and rules, shared by the SQL engines and the in-memory twin
(:class:`~broker.apikeys.store.ApiKeyStore`).

The rules, in the order every engine applies them (:func:`added`, :func:`updated`, :func:`rotated`), so all three
refuse alike and a refusal writes nothing and bumps nothing:

1. the time of the change is timezone-aware and the caller's record passes
   :func:`~broker.apikeys.model.check_exception` (ValueError);
2. :func:`current`: LookupError if there is no such exception, then :class:`~broker.errors.StoreConflictError` if
   its stored ``revision`` is not the caller's or it is revoked (final);
3. the record as it will be stored (the stored ``created_at`` and ``current_version``, the next ``revision``)
   passes :func:`~broker.apikeys.model.check_exception` again (ValueError), with every time in UTC.

A row of ``apikey_exceptions`` is :data:`EXCEPTION_COLUMNS`: the columns a query filters or orders on, and
``body``, the descriptive fields as JSON (RFC 8259) with times and the review interval as exact integer
microseconds, so a store gives back the record it was given. Secret versions (:data:`VERSION_COLUMNS`) hold only
the sealed bytes and the KEK's id; nothing here ever sees a secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.apikeys.model import (
    ApiKeyException,
    Delivery,
    Presentation,
    SealedVersion,
    State,
    Target,
    UseRecord,
    check_exception,
)
from broker.errors import StoreConflictError, StoreCorruptError
from broker.events.revocations import SubjectPattern
from broker.tokens.keystore import check_instant

__all__ = [
    "EXCEPTION_COLUMNS",
    "USE_COLUMNS",
    "VERSION_COLUMNS",
    "added",
    "check_uses",
    "current",
    "exception_of",
    "exception_params",
    "name_taken",
    "rotated",
    "stale_revision",
    "updated",
    "use_of",
    "version_of",
]

EXCEPTION_COLUMNS = "name, revision, state, current_version, expires_at, created_at, updated_at, body"
VERSION_COLUMNS = "name, version, sealed, kek_id, created_at, superseded_at"
USE_COLUMNS = "name, spiffe_id, version, target, count, last_used_at"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ToDatetime = Callable[[Any], datetime | None]


def name_taken(name: str) -> str:
    return f"an exception named {name!r} exists (names are never reused, revoked ones included): pick another name"


def stale_revision(name: str) -> str:
    return f"exception {name!r} changed meanwhile (or is revoked): read it again and repeat the change"


def _utc(record: ApiKeyException) -> ApiKeyException:
    """``record`` (checked: its times are aware) with every time in UTC, as the SQL engines give them back."""
    review = None if record.last_review_at is None else record.last_review_at.astimezone(UTC)
    return replace(record, expires_at=record.expires_at.astimezone(UTC), last_review_at=review)


def added(record: ApiKeyException, at: datetime) -> ApiKeyException:
    """The record :meth:`~broker.apikeys.store.ApiKeyStore.add` stores: revision 1, version 1, created at ``at``."""
    when = check_instant(at).astimezone(UTC)
    check_exception(record)
    return _utc(check_exception(replace(record, revision=1, current_version=1, created_at=when, updated_at=when)))


def updated(stored: ApiKeyException | None, record: ApiKeyException, at: datetime) -> ApiKeyException:
    """The record :meth:`~broker.apikeys.store.ApiKeyStore.update` stores over ``stored``: ``record`` with the
    stored ``created_at`` and ``current_version``, the next revision, updated at ``at``."""
    when = check_instant(at).astimezone(UTC)
    check_exception(record)
    base = current(stored, record.name, record.revision)
    merged = replace(record, revision=base.revision + 1, current_version=base.current_version,
                     created_at=base.created_at, updated_at=when)  # fmt: skip
    return _utc(check_exception(merged))


def rotated(stored: ApiKeyException | None, name: str, revision: int, at: datetime) -> ApiKeyException:
    """The record after :meth:`~broker.apikeys.store.ApiKeyStore.rotate`: the next version and revision."""
    when = check_instant(at).astimezone(UTC)
    base = current(stored, name, revision)
    return replace(base, revision=base.revision + 1, current_version=base.current_version + 1, updated_at=when)


def current(stored: ApiKeyException | None, name: str, revision: int) -> ApiKeyException:
    """``stored`` if a change made at ``revision`` may replace it; LookupError or StoreConflictError otherwise."""
    if stored is None:
        raise LookupError(f"no exception named {name!r}")
    if stored.revision != revision or stored.state is State.REVOKED:
        raise StoreConflictError(stale_revision(name))
    return stored


def check_uses(uses: Sequence[UseRecord]) -> None:
    """ValueError (nothing written) for a naive ``last_used_at`` or a row that counts no use."""
    for use in uses:
        check_instant(use.last_used_at)
        if use.count < 1:
            raise ValueError("a use row counts at least one use")


def _span(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _micros(at: datetime | None) -> int | None:
    return None if at is None else _span(check_instant(at) - _EPOCH)


def _micros_of(value: Any) -> int:
    if type(value) is not int:
        raise ValueError("a time is an integer number of microseconds")
    return value


def _time(value: Any) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=_micros_of(value))


def _body(record: ApiKeyException) -> str:
    t, p = record.target, record.presentation
    fields = {
        "target": {"scheme": t.scheme, "host": t.host, "port": t.port, "path_prefix": t.path_prefix,
                   "wildcard_host": t.wildcard_host},
        "owner": record.owner,
        "contact": record.contact,
        "justification": record.justification,
        "ticket": record.ticket,
        "review_interval": _span(record.review_interval),
        "allowed": [pattern.text for pattern in record.allowed],
        "presentation": {"kind": p.kind, "name": p.name, "template": p.template},
        "delivery": record.delivery.value,
        "state_reason": record.state_reason,
        "last_review_at": _micros(record.last_review_at),
        "last_review_by": record.last_review_by,
    }  # fmt: skip
    return json.dumps(fields, separators=(",", ":"))  # ASCII: the same bytes whatever the database encoding


def exception_params(record: ApiKeyException, time: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """``record`` as :data:`EXCEPTION_COLUMNS` values; ``time`` turns a datetime into the engine's column value."""
    assert record.created_at is not None and record.updated_at is not None, "a stored record is stamped"
    return (record.name, record.revision, record.state.value, record.current_version, time(record.expires_at),
            time(record.created_at), time(record.updated_at), _body(record))  # fmt: skip


def _as_is(value: Any) -> datetime | None:
    return None if value is None else check_instant(value)


def _required(value: datetime | None) -> datetime:
    if value is None:
        raise ValueError("a required time is missing")
    return value


def exception_of(row: tuple[Any, ...], to_datetime: _ToDatetime = _as_is) -> ApiKeyException:
    """A :data:`EXCEPTION_COLUMNS` row back as an :class:`ApiKeyException`; :class:`StoreCorruptError` for a row
    this broker did not write. ``to_datetime`` reads the engine's times (SQLite's microseconds)."""
    name, revision, state, version, expires, created, changed, body = row
    try:
        fields = json.loads(body)
        return ApiKeyException(
            name=str(name), target=Target(**fields["target"]), owner=fields["owner"], contact=fields["contact"],
            justification=fields["justification"], ticket=fields["ticket"], expires_at=_required(to_datetime(expires)),
            review_interval=timedelta(microseconds=_micros_of(fields["review_interval"])),
            allowed=tuple(SubjectPattern.parse(text, all_of_trust_domain=True) for text in fields["allowed"]),
            presentation=Presentation(**fields["presentation"]), delivery=Delivery(fields["delivery"]),
            state=State(state), state_reason=fields["state_reason"], last_review_at=_time(fields["last_review_at"]),
            last_review_by=fields["last_review_by"], current_version=int(version), revision=int(revision),
            created_at=to_datetime(created), updated_at=to_datetime(changed),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError):
        raise StoreCorruptError(f"API-key exception {name!r} is not a row this spiffe-broker wrote") from None


def version_of(row: tuple[Any, ...], to_datetime: _ToDatetime = _as_is) -> SealedVersion:
    """A :data:`VERSION_COLUMNS` row back as a :class:`SealedVersion` (its bytes as they are: sealed)."""
    name, version, sealed, kek_id, created, superseded = row
    return SealedVersion(str(name), int(version), bytes(sealed), str(kek_id), _required(to_datetime(created)),
                         to_datetime(superseded))  # fmt: skip


def use_of(row: tuple[Any, ...], to_datetime: _ToDatetime = _as_is) -> UseRecord:
    name, spiffe_id, version, target, count, last = row
    return UseRecord(str(name), str(spiffe_id), int(version), str(target), int(count), _required(to_datetime(last)))
