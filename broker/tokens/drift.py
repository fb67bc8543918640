"""Clock-drift awareness: how far each client's clock is from the server's, seen in the ``iat`` of what it signs.

Drift is what breaks replay checks in practice: a client whose clock runs ahead has its assertions refused as
"issued in the future"; one whose clock runs behind burns part of every short assertion lifetime, and both eat
into the leeway that sizes the replay cache. For each client (a registered ``client_id`` or a SPIFFE ID) the
tracker keeps a bounded window of recent samples of ``server time - iat`` per source (client assertions, DPoP
proofs, JWT-SVIDs) and reports their median and extremes and the offset they show (:func:`drift_of`). It logs ONE
warning per client when the drift of one of its sources passes half the leeway (issue 11: "one warning per client";
a client whose clock is off shows it in its assertions and its DPoP proofs alike, and one warning says it), and
again only after every source of that client has come back under a quarter of the leeway, so a drifting fleet does
not flood the log. The number of clients tracked is bounded; the least recently seen is forgotten first.

A sample is taken only from a credential whose signature verified: an attacker cannot fill the table with made-up
clients.
"""

from __future__ import annotations

import logging
import statistics
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["DriftReport", "DriftSource", "DriftTracker", "drift_of"]

log = logging.getLogger(__name__)

SAMPLES_PER_CLIENT = 64
MAX_CLIENTS = 10_000


class DriftSource(StrEnum):
    ASSERTION = "client_assertion"  # RFC 7523 private_key_jwt: made for the request, server time - iat
    JWT_SVID = "jwt_svid"  # jwt-spiffe: made by the SPIRE agent, maybe long before the request (see drift_of)
    DPOP = "dpop_proof"  # RFC 9449 §4.2: made for the request, server time - iat


def drift_of(source: DriftSource, samples: Sequence[float]) -> float:
    """The clock offset ``samples`` of ``server time - iat`` show: their median for credentials made for the
    request (an assertion, a DPoP proof), their minimum for JWT-SVIDs. A SPIRE agent mints a JWT-SVID and hands
    the same one out until half its lifetime (docs/threat-model.md), so ``server time - iat`` of a JWT-SVID is the
    clock offset PLUS the token's age when used; the freshest one seen bounds the offset best (a client clock that
    runs ahead still shows: every sample is then negative)."""
    return min(samples) if source is DriftSource.JWT_SVID else statistics.median(samples)


@dataclass(frozen=True, slots=True)
class DriftReport:
    """One client's drift for one source, in seconds (positive: the client's clock is behind the server's)."""

    client: str
    source: DriftSource
    samples: int
    median: float
    minimum: float
    maximum: float
    last_seen: float

    @property
    def drift(self) -> float:
        """The estimated offset (:func:`drift_of`): what the warning and the ranking use."""
        return self.minimum if self.source is DriftSource.JWT_SVID else self.median

    def to_json(self) -> dict[str, object]:
        return {
            "client": self.client,
            "source": self.source.value,
            "samples": self.samples,
            "drift_seconds": round(self.drift, 3),
            "median_seconds": round(self.median, 3),
            "min_seconds": round(self.minimum, 3),
            "max_seconds": round(self.maximum, 3),
            "last_seen": self.last_seen,
        }


class _Window:
    __slots__ = ("last_seen", "samples", "warned")

    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=SAMPLES_PER_CLIENT)
        self.warned = False
        self.last_seen = 0.0


class DriftTracker:
    """Per (client, source) windows of ``server time - iat``; ``leeway`` is the one the checks apply."""

    def __init__(self, *, leeway: float, max_clients: int = MAX_CLIENTS) -> None:
        self.leeway = leeway
        self._max_clients = max_clients
        self._windows: OrderedDict[tuple[str, DriftSource], _Window] = OrderedDict()
        self.observers: list[Callable[[DriftSource, float], None]] = []  # each sample (the metrics' histogram)

    def record(self, client: str, source: DriftSource, *, now: float, iat: float) -> None:
        """One sample: the credential of ``client`` said ``iat`` and the server's clock said ``now``."""
        key = (client, source)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
            while len(self._windows) > self._max_clients:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(key)
        window.samples.append(now - iat)
        window.last_seen = now
        for observe in self.observers:
            observe(source, now - iat)
        self._maybe_warn(client, source, window)

    def _maybe_warn(self, client: str, source: DriftSource, window: _Window) -> None:
        drift = abs(drift_of(source, window.samples))
        if not window.warned and drift > self.leeway / 2:
            window.warned = True
            if self._warned_elsewhere(client, source):
                return
            log.warning(
                "clock drift: %s's %s iat is %.1f s from the server's clock (of %d samples), more than half the "
                "%.0f s leeway; check time sync (NTP/chrony) on the client and on this server",
                client, source.value, drift, len(window.samples), self.leeway,
            )  # fmt: skip
        elif window.warned and drift < self.leeway / 4:
            window.warned = False

    def _warned_elsewhere(self, client: str, source: DriftSource) -> bool:
        """Whether another source of ``client`` is still past the warning line (its warning stands for both)."""
        others = (self._windows.get((client, other)) for other in DriftSource if other != source)
        return any(window is not None and window.warned for window in others)

    def report(self, client: str, source: DriftSource) -> DriftReport | None:
        window = self._windows.get((client, source))
        return None if window is None else _report(client, source, window)

    def worst(self, limit: int = 10) -> list[DriftReport]:
        """The ``limit`` clients whose drift (:func:`drift_of`) is largest in magnitude, worst first."""
        reports = [_report(client, source, window) for (client, source), window in self._windows.items()]
        reports.sort(key=lambda report: abs(report.drift), reverse=True)
        return reports[:limit]


def _report(client: str, source: DriftSource, window: _Window) -> DriftReport:
    samples = list(window.samples)
    return DriftReport(client, source, len(samples), statistics.median(samples), min(samples), max(samples),
                       window.last_seen)  # fmt: skip
