"""What the token service hands a sidecar for one API-key exception, and the JSON that carries it.

Two answers, both over mTLS with the sidecar's X.509-SVID (the caller is the SVID's SPIFFE ID):

* ``GET /v1/apikeys`` -> :class:`Catalog`: the exceptions the caller may use right now (``name``, target,
  presentation, delivery, placeholder), never a secret. The sidecar's egress proxy routes by it.
* ``POST /v1/apikeys/report`` <- :class:`EgressReport`: the sidecar's aggregated uses and its refusals, every
  flush interval (204 No Content).
* ``POST /v1/apikeys/{name}/grant`` -> :class:`Grant`: the secret of the current version, after every check
  (allowed SPIFFE ID, status, expiry, review, quarantine). ``hold_until`` is when the sidecar must drop it
  (``granted_at`` plus the configured hold time, never past the exception's expiry or the version's end of grace).

Both answers carry ``Cache-Control: no-store`` (RFC 9111 §5.2.2.5). A refusal is a JSON error object
``{"error", "error_description"}`` with 403 (``access_denied``: not allowed, not usable now, quarantined), 404
(``not_found``: no such exception) or 503 (``temporarily_unavailable``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from broker.apikeys.model import Delivery, Presentation, Target, check_secret, placeholder

__all__ = [
    "CATALOG_PATH",
    "GRANT_PATH",
    "MAX_REPORT_ITEMS",
    "REFUSAL_REASONS",
    "REPORT_PATH",
    "Catalog",
    "CatalogEntry",
    "EgressRefusal",
    "EgressReport",
    "Grant",
    "UseCount",
    "catalog_from_wire",
    "catalog_to_wire",
    "grant_from_wire",
    "grant_to_wire",
    "report_from_wire",
    "report_to_wire",
]

CATALOG_PATH = "/v1/apikeys"
GRANT_PATH = "/v1/apikeys/{name}/grant"


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    name: str
    target: Target
    presentation: Presentation
    delivery: Delivery

    @property
    def placeholder(self) -> str:
        return placeholder(self.name)


@dataclass(frozen=True, slots=True)
class Catalog:
    entries: tuple[CatalogEntry, ...]


@dataclass(frozen=True, slots=True)
class Grant:
    """One exception's secret for one sidecar, until ``hold_until``. Its repr never shows the secret."""

    name: str
    version: int
    secret: str = field(repr=False)
    target: Target
    presentation: Presentation
    delivery: Delivery
    granted_at: datetime
    hold_until: datetime

    def header_or_query_value(self) -> str:
        return self.presentation.render(self.secret)


def _ts(at: datetime) -> float:
    return math.floor(at.timestamp() * 1000) / 1000


def _at(value: Any, name: str) -> datetime:
    if type(value) not in (int, float) or not 0 <= value < 253402300800:
        raise ValueError(f"{name} is seconds since the epoch")
    return datetime.fromtimestamp(value, UTC)


def _target_wire(target: Target) -> dict[str, Any]:
    return {"scheme": target.scheme, "host": target.host, "port": target.port, "path_prefix": target.path_prefix,
            "wildcard_host": target.wildcard_host}  # fmt: skip


def _presentation_wire(presentation: Presentation) -> dict[str, Any]:
    return {"kind": presentation.kind, "name": presentation.name, "template": presentation.template}


def _target(obj: Any) -> Target:
    if not isinstance(obj, Mapping) or set(obj) != {"scheme", "host", "port", "path_prefix", "wildcard_host"}:
        raise ValueError("target is an object with scheme, host, port, path_prefix and wildcard_host")
    port, wildcard = obj["port"], obj["wildcard_host"]
    if type(port) is not int or type(wildcard) is not bool:
        raise ValueError("target port is an integer and wildcard_host a boolean")
    return Target(_text(obj["host"]), port, _text(obj["path_prefix"]), _text(obj["scheme"]), wildcard)


def _presentation(obj: Any) -> Presentation:
    if not isinstance(obj, Mapping) or set(obj) != {"kind", "name", "template"}:
        raise ValueError("presentation is an object with kind, name and template")
    return Presentation(_text(obj["kind"]), _text(obj["name"]), _text(obj["template"]))


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def catalog_to_wire(catalog: Catalog) -> dict[str, Any]:
    return {
        "apikeys": [
            {"name": e.name, "target": _target_wire(e.target), "presentation": _presentation_wire(e.presentation),
             "delivery": e.delivery.value, "placeholder": e.placeholder}
            for e in catalog.entries
        ]
    }  # fmt: skip


def catalog_from_wire(obj: Any) -> Catalog:
    """ValueError for anything but what :func:`catalog_to_wire` writes."""
    if not isinstance(obj, Mapping) or set(obj) != {"apikeys"} or not isinstance(obj["apikeys"], list):
        raise ValueError("a catalog is an object with an apikeys list")
    entries = []
    for item in obj["apikeys"]:
        if not isinstance(item, Mapping) or set(item) != {"name", "target", "presentation", "delivery", "placeholder"}:
            raise ValueError("a catalog entry has name, target, presentation, delivery and placeholder")
        entries.append(
            CatalogEntry(_text(item["name"]), _target(item["target"]), _presentation(item["presentation"]),
                         Delivery(_text(item["delivery"])))
        )  # fmt: skip
    return Catalog(tuple(entries))


def grant_to_wire(grant: Grant) -> dict[str, Any]:
    return {"name": grant.name, "version": grant.version, "secret": grant.secret,
            "target": _target_wire(grant.target), "presentation": _presentation_wire(grant.presentation),
            "delivery": grant.delivery.value, "granted_at": _ts(grant.granted_at),
            "hold_until": _ts(grant.hold_until)}  # fmt: skip


def grant_from_wire(obj: Any) -> Grant:
    """ValueError (never echoing the secret) for anything but what :func:`grant_to_wire` writes."""
    keys = {"name", "version", "secret", "target", "presentation", "delivery", "granted_at", "hold_until"}
    if not isinstance(obj, Mapping) or set(obj) != keys:
        raise ValueError(f"a grant is an object with exactly {', '.join(sorted(keys))}")
    version = obj["version"]
    if type(version) is not int or version < 1:
        raise ValueError("version is a positive integer")
    secret = check_secret(_text(obj["secret"]).encode("utf-8"))
    return Grant(
        name=_text(obj["name"]),
        version=version,
        secret=secret,
        target=_target(obj["target"]),
        presentation=_presentation(obj["presentation"]),
        delivery=Delivery(_text(obj["delivery"])),
        granted_at=_at(obj["granted_at"], "granted_at"),
        hold_until=_at(obj["hold_until"], "hold_until"),
    )


REPORT_PATH = "/v1/apikeys/report"
REFUSAL_REASONS = frozenset(
    {"placeholder_to_other_target", "target_not_covered", "target_certificate", "connect_tunnel", "not_granted"}
)


@dataclass(frozen=True, slots=True)
class UseCount:
    """What a sidecar injected since its last report: ``count`` requests to ``target`` with ``version``."""

    name: str
    version: int
    target: str
    count: int
    last_used_at: datetime


@dataclass(frozen=True, slots=True)
class EgressRefusal:
    """A request the sidecar's egress proxy refused; ``name`` is the exception it concerned, if any."""

    name: str | None
    target: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class EgressReport:
    """``POST /v1/apikeys/report`` (mTLS; the reporter is the SVID's SPIFFE ID): aggregated uses and refusals,
    sent every flush interval. The token service records the uses and audits both."""

    uses: tuple[UseCount, ...] = ()
    refusals: tuple[EgressRefusal, ...] = ()


MAX_REPORT_ITEMS = 1000


def report_to_wire(report: EgressReport) -> dict[str, Any]:
    return {
        "uses": [{"name": u.name, "version": u.version, "target": u.target, "count": u.count,
                  "last_used_at": _ts(u.last_used_at)} for u in report.uses],
        "refusals": [{"name": r.name, "target": r.target, "reason": r.reason, "at": _ts(r.at)}
                     for r in report.refusals],
    }  # fmt: skip


def report_from_wire(obj: Any) -> EgressReport:
    """ValueError for anything but what :func:`report_to_wire` writes (at most MAX_REPORT_ITEMS items each)."""
    if not isinstance(obj, Mapping) or set(obj) != {"uses", "refusals"}:
        raise ValueError("a report is an object with uses and refusals")
    uses, refusals = obj["uses"], obj["refusals"]
    if not isinstance(uses, list) or not isinstance(refusals, list):
        raise ValueError("uses and refusals are lists")
    if len(uses) > MAX_REPORT_ITEMS or len(refusals) > MAX_REPORT_ITEMS:
        raise ValueError(f"at most {MAX_REPORT_ITEMS} uses and {MAX_REPORT_ITEMS} refusals per report")
    return EgressReport(tuple(map(_use, uses)), tuple(map(_refusal, refusals)))


def _use(item: Any) -> UseCount:
    if not isinstance(item, Mapping) or set(item) != {"name", "version", "target", "count", "last_used_at"}:
        raise ValueError("a use has name, version, target, count and last_used_at")
    version, count = item["version"], item["count"]
    if type(version) is not int or version < 1 or type(count) is not int or not 1 <= count <= 10**9:
        raise ValueError("version and count are positive integers")
    target = _text(item["target"])
    if len(target) > 2048:
        raise ValueError("target is at most 2048 characters")
    return UseCount(_text(item["name"]), version, target, count, _at(item["last_used_at"], "last_used_at"))


def _refusal(item: Any) -> EgressRefusal:
    if not isinstance(item, Mapping) or set(item) != {"name", "target", "reason", "at"}:
        raise ValueError("a refusal has name, target, reason and at")
    name = None if item["name"] is None else _text(item["name"])
    reason, target = _text(item["reason"]), _text(item["target"])
    if reason not in REFUSAL_REASONS or len(target) > 2048:
        raise ValueError(f"reason is one of {', '.join(sorted(REFUSAL_REASONS))}; target at most 2048 characters")
    return EgressRefusal(name, target, reason, _at(item["at"], "at"))
