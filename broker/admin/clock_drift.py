"""Admin endpoint of clock drift (issue 11 item 4): the clients whose clocks are furthest from this replica's.

::

    GET /admin/v1/clock-drift?limit=N     the N worst (client, source) pairs, worst first (1 to 100, default 10)

The answer::

    {"leeway_seconds": 10.0, "warn_above_seconds": 5.0, "replica": "broker-7d9f-abcde", "scope": "replica",
     "clients": [{"client": "spiffe://example.org/ns/shop/sa/web", "source": "client_assertion", "samples": 64,
                  "median_seconds": -6.2, "min_seconds": -6.9, "max_seconds": -5.8, "last_seen": 1767225600.0}]}

Each entry is :meth:`broker.tokens.drift.DriftReport.to_json`: ``server time - iat`` in seconds over the last
samples of one client (a registered ``client_id`` or a SPIFFE ID) and one source (``client_assertion`` or
``dpop_proof``); negative means the client's clock runs ahead of the server's. ``warn_above_seconds`` is half
the leeway, where the tracker logs its one warning per client and source.

**Per replica.** The samples live in the memory of the replica that verified the credentials
(:class:`~broker.tokens.drift.DriftTracker`), since it started: ``"scope": "replica"`` says so, and ``replica``
names the one that answered (its host name; in Kubernetes, the pod). Behind a load balancer, ask each replica.

A ``limit`` that is not a whole number from 1 to 100 is ``invalid_request`` (400), audited ``refused``. The
document and its decoder live here rather than in :mod:`broker.admin.wire` so that module stays one screenful
per concern; they follow its rules (a decoder refuses another shape with :class:`~broker.admin.wire.WireError`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.admin.ports import DriftView
from broker.admin.routes import AdminInput, AdminOutput, AdminRoute
from broker.admin.wire import WireError
from broker.errors import InvalidRequestError
from broker.tokens.drift import DriftReport, DriftSource

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "ClockDrift", "clock_drift_document", "decode_clock_drift", "drift_routes"]

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
SCOPE = "replica"  # the samples are this replica's own, in memory
_PARAMS = frozenset({"limit"})


@dataclass(frozen=True, slots=True)
class ClockDrift:
    """The worst drifts one replica has seen, worst first, with the leeway they are measured against."""

    leeway: float
    replica: str | None
    clients: tuple[DriftReport, ...]

    @property
    def warn_above(self) -> float:
        """Half the leeway: beyond it, the tracker has logged (or will log) its warning."""
        return self.leeway / 2

    def drifting(self, report: DriftReport) -> bool:
        return abs(report.drift) > self.warn_above


def drift_limit(params: Mapping[str, Any]) -> int:
    """The ``limit`` query parameter: a whole number from 1 to :data:`MAX_LIMIT`, default :data:`DEFAULT_LIMIT`."""
    text = params.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit() and len(text) <= 3) or not 1 <= int(text) <= MAX_LIMIT:
        raise InvalidRequestError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def _describe(given: AdminInput) -> dict[str, Any]:
    return {"limit": drift_limit(given.params)}


def drift_routes(drift: DriftView, replica: str | None = None) -> tuple[AdminRoute, ...]:
    """The route over ``drift``; ``replica`` names this replica in the answer (None: unnamed)."""

    async def worst(given: AdminInput) -> AdminOutput:
        found = ClockDrift(drift.leeway, replica, tuple(drift.worst(drift_limit(given.params))))
        return AdminOutput(clock_drift_document(found), {"clients": len(found.clients)})

    return (AdminRoute("GET", "/clock-drift", worst, params=_PARAMS, describe=_describe),)


def clock_drift_document(drift: ClockDrift) -> dict[str, Any]:
    return {
        "leeway_seconds": drift.leeway,
        "warn_above_seconds": drift.warn_above,
        "replica": drift.replica,
        "scope": SCOPE,
        "clients": [report.to_json() for report in drift.clients],
    }


# -- decoding (client) -----------------------------------------------------------------------------------------


def _number(document: Mapping[str, Any], name: str) -> float:
    value = document.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise WireError(f"member {name!r} is missing or not a number")
    return float(value)


def _string(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str):
        raise WireError(f"member {name!r} is missing or not a str")
    return value


def _report(item: Any) -> DriftReport:
    if not isinstance(item, dict):
        raise WireError("member 'clients' is not a list of objects")
    try:
        source = DriftSource(_string(item, "source"))
    except ValueError:
        raise WireError("member 'source' is not a drift source") from None
    samples = item.get("samples")
    if not isinstance(samples, int) or isinstance(samples, bool):
        raise WireError("member 'samples' is missing or not an int")
    return DriftReport(client=_string(item, "client"), source=source, samples=samples,
                       median=_number(item, "median_seconds"), minimum=_number(item, "min_seconds"),
                       maximum=_number(item, "max_seconds"), last_seen=_number(item, "last_seen"))  # fmt: skip


def decode_clock_drift(document: Mapping[str, Any]) -> ClockDrift:
    replica = document.get("replica")
    if replica is not None and not isinstance(replica, str):
        raise WireError("member 'replica' is not a str")
    if document.get("scope") != SCOPE:
        raise WireError(f"member 'scope' is not {SCOPE!r}")
    clients = document.get("clients")
    if not isinstance(clients, list):
        raise WireError("member 'clients' is missing or not a list")
    return ClockDrift(_number(document, "leeway_seconds"), replica, tuple(_report(item) for item in clients))
