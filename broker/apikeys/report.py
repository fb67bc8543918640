"""The governance report: for each exception, who owns it, its status, how long until it expires, when its review
is due, who last used it and when, how long it has been idle, and whether it hands its secret to the app.

:func:`build_report` computes the rows at one instant from the records and the aggregated uses (the store's
``uses``, which the token service fills from the sidecars' reports: exact to within their flush interval).
``idle_days`` counts whole days since the last use by any workload, or since the exception was created if it was
never used; ``unused`` is ``idle_days >= unused_days``.

:class:`FailOn` is what ``spiffe-broker exceptions report --fail-on`` matches (a CI gate), parsed strictly by
:meth:`FailOn.parse` from a comma list of terms, each at most once:

* ``overdue``: the review is past due;
* ``expiring:<N>d``: expires within N days (an expired one too);
* ``unused:<N>d``: idle for N days or more;
* ``reveal``: the secret is handed to the app (``delivery = reveal``).

Revoked exceptions are reported but match no term: revocation is final, there is nothing left to fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.apikeys.model import ApiKeyException, Delivery, Status, UseRecord, review_due, status_at
from broker.apikeys.rules import GovernanceRules

__all__ = ["DEFAULT_UNUSED_DAYS", "MAX_DAYS", "FailOn", "Report", "ReportRow", "WorkloadUse", "build_report"]

DEFAULT_UNUSED_DAYS = 30
MAX_DAYS = 3660
_DAY = timedelta(days=1)
_DAYS_TERM = re.compile(r"(expiring|unused):([1-9][0-9]{0,3})d")


@dataclass(frozen=True, slots=True)
class WorkloadUse:
    """One workload's uses of an exception (every version and target): how many, and the last one."""

    spiffe_id: str
    last_used_at: datetime
    count: int


@dataclass(frozen=True, slots=True)
class ReportRow:
    name: str
    owner: str
    contact: str
    ticket: str
    status: Status
    delivery: Delivery
    expires_at: datetime
    days_to_expiry: int  # whole days, rounded down; negative once expired
    review_due: datetime
    review_overdue: bool
    grantable: bool  # status and review allow a grant now (the caller's own checks aside)
    current_version: int
    last_used_at: datetime | None
    idle_days: int
    unused: bool
    uses: tuple[WorkloadUse, ...]  # per workload, the latest use first

    @property
    def reveal(self) -> bool:
        return self.delivery is Delivery.REVEAL


@dataclass(frozen=True, slots=True)
class Report:
    generated_at: datetime
    unused_days: int
    rows: tuple[ReportRow, ...]


def _days(delta: timedelta) -> int:
    return math.floor(delta / _DAY)


def _per_workload(uses: Iterable[UseRecord]) -> tuple[WorkloadUse, ...]:
    merged: dict[str, WorkloadUse] = {}
    for use in uses:
        known = merged.get(use.spiffe_id)
        if known is None:
            merged[use.spiffe_id] = WorkloadUse(use.spiffe_id, use.last_used_at, use.count)
        else:
            merged[use.spiffe_id] = WorkloadUse(use.spiffe_id, max(known.last_used_at, use.last_used_at),
                                                known.count + use.count)  # fmt: skip
    return tuple(sorted(merged.values(), key=lambda w: (-w.last_used_at.timestamp(), w.spiffe_id)))


def _row(record: ApiKeyException, uses: tuple[WorkloadUse, ...], now: datetime, rules: GovernanceRules,
         unused_days: int) -> ReportRow:  # fmt: skip
    status, due = status_at(record, now), review_due(record)
    last = uses[0].last_used_at if uses else None
    idle = _days(now - (last or record.created_at or now))
    grantable = status is Status.ACTIVE or (status is Status.REVIEW_OVERDUE and not rules.review_refused(due, now))
    return ReportRow(
        name=record.name, owner=record.owner, contact=record.contact, ticket=record.ticket, status=status,
        delivery=record.delivery, expires_at=record.expires_at, days_to_expiry=_days(record.expires_at - now),
        review_due=due, review_overdue=now > due, grantable=grantable, current_version=record.current_version,
        last_used_at=last, idle_days=idle, unused=idle >= unused_days, uses=uses,
    )  # fmt: skip


def build_report(
    records: Iterable[ApiKeyException],
    uses: Iterable[UseRecord],
    now: datetime,
    rules: GovernanceRules,
    unused_days: int = DEFAULT_UNUSED_DAYS,
) -> Report:
    """The report at ``now``, one row per exception, by name."""
    if not 1 <= unused_days <= MAX_DAYS:
        raise ValueError(f"unused_days must be 1-{MAX_DAYS}")
    by_name: dict[str, list[UseRecord]] = {}
    for use in uses:
        by_name.setdefault(use.name, []).append(use)
    rows = tuple(
        _row(record, _per_workload(by_name.get(record.name, ())), now, rules, unused_days)
        for record in sorted(records, key=lambda r: r.name)
    )
    return Report(now, unused_days, rows)


@dataclass(frozen=True, slots=True)
class FailOn:
    """The ``--fail-on`` terms; :meth:`matches` says which a row trips."""

    overdue: bool = False
    reveal: bool = False
    expiring_days: int | None = None
    unused_days: int | None = None

    @classmethod
    def parse(cls, text: str) -> FailOn:
        """``overdue,expiring:14d,unused:30d,reveal`` (any subset, each once); ValueError naming a bad term."""
        found: dict[str, int | bool] = {}
        for term in text.split(","):
            key, value = _term(term)
            if key in found:
                raise ValueError(f"--fail-on names {key} twice")
            found[key] = value
        return cls(
            overdue="overdue" in found, reveal="reveal" in found,
            expiring_days=_int(found.get("expiring")), unused_days=_int(found.get("unused")),
        )  # fmt: skip

    def matches(self, row: ReportRow) -> list[str]:
        """The terms ``row`` trips (none for a revoked exception)."""
        if row.status is Status.REVOKED:
            return []
        tripped = []
        if self.overdue and row.review_overdue:
            tripped.append("overdue")
        if self.expiring_days is not None and row.days_to_expiry <= self.expiring_days:
            tripped.append(f"expiring:{self.expiring_days}d")
        if self.unused_days is not None and row.idle_days >= self.unused_days:
            tripped.append(f"unused:{self.unused_days}d")
        if self.reveal and row.reveal:
            tripped.append("reveal")
        return tripped


def _term(term: str) -> tuple[str, int | bool]:
    if term in ("overdue", "reveal"):
        return term, True
    match = _DAYS_TERM.fullmatch(term)
    if match is None or int(match[2]) > MAX_DAYS:
        raise ValueError(
            f"--fail-on term {term[:40]!r} is not one of overdue, reveal, expiring:<N>d, unused:<N>d "
            f"(N from 1 to {MAX_DAYS}; comma-separated, no spaces)"
        )
    return match[1], int(match[2])


def _int(value: int | bool | None) -> int | None:
    return None if value is None or isinstance(value, bool) else value
