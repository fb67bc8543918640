"""Prometheus metrics: one registry per process part, read-at-scrape families, bounded label values.

Each part (token service, sidecar, dev Workload API) owns a :class:`~prometheus_client.CollectorRegistry` made by
:func:`new_registry` (process and Python collectors, ``spiffe_broker_build_info``), served at ``GET /metrics`` on
its own listener (:mod:`broker.web.metrics`), never on the port or socket apps use unless configured.

Two kinds of instruments, chosen by what they cost on the request path:

* **Read at scrape** (:class:`ScrapeCollector`): a gauge or counter whose value a component already keeps (a
  cache's size, a key's age, an exception's expiry, a counter held as a plain ``int``) is read only when Prometheus
  scrapes; the request path pays nothing.
* **Updated per request**: request counters and latency histograms (:mod:`broker.web.metrics`), installed only
  when metrics are enabled, so "off" costs nothing either.

Cardinality is bounded by construction: label values come from fixed sets (route templates, grant types, RFC error
codes) or from operator-named things (API-key exceptions); a SPIFFE ID or an audience is a label only through a
:class:`CappedLabel`, and a ``jti``, token, key or secret never is (``tests/unit/test_metrics_scrape.py`` checks
every label).
Names follow Prometheus conventions: the ``spiffe_broker_`` prefix, base units (``_seconds``, ``_bytes``),
``_total`` for counters.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "OTHER",
    "PREFIX",
    "CappedLabel",
    "Sample",
    "ScrapeCollector",
    "counter_family",
    "gauge_family",
    "new_registry",
]

log = logging.getLogger(__name__)

PREFIX = "spiffe_broker_"
OTHER = "other"  # the label value standing for every value past a CappedLabel's cap
Sample = tuple[Sequence[str], float]  # (label values, value)


def _version() -> str:
    try:
        return metadata.version("spiffe-broker")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def new_registry(part: str) -> CollectorRegistry:
    """A registry for one process part (``token_service``, ``sidecar``, ``workload_api``): process and Python
    runtime collectors, and ``spiffe_broker_build_info{version, part} 1``. No ``_created`` series (one more
    series per counter and histogram child, which the text format shows as a separate gauge family)."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    info = Gauge(f"{PREFIX}build_info", "spiffe-broker's version and which part this is", ["version", "part"],
                 registry=registry)  # fmt: skip
    info.labels(_version(), part).set(1)
    return registry


class CappedLabel:
    """At most ``cap`` distinct values of one label; later values become :data:`OTHER`. Thread-safe."""

    def __init__(self, cap: int) -> None:
        if cap < 0:
            raise ValueError("cap must not be negative")
        self._cap = cap
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._cap:
                self._seen.add(value)
                return value
        return OTHER


def gauge_family(name: str, documentation: str, labels: Sequence[str], samples: Iterable[Sample]) -> Metric:
    family = GaugeMetricFamily(PREFIX + name, documentation, labels=list(labels))
    for values, value in samples:
        family.add_metric(list(values), value)
    return family


def counter_family(name: str, documentation: str, labels: Sequence[str], samples: Iterable[Sample]) -> Metric:
    """``name`` without ``_total`` (prometheus-client appends it)."""
    family = CounterMetricFamily(PREFIX + name, documentation, labels=list(labels))
    for values, value in samples:
        family.add_metric(list(values), value)
    return family


class ScrapeCollector(Collector):
    """Families computed when Prometheus scrapes, by ``read`` (which must be cheap and must not block).

    A ``read`` that raises (a bug, or a part in a state it did not expect) costs only the families it had not
    yielded yet: the others are served, the failure is counted in ``spiffe_broker_scrape_errors_total`` and
    logged (its type only) once until a scrape succeeds again. A scrape never fails as a whole."""

    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self._read = read
        self.errors = 0
        self._failing = False

    def collect(self) -> Iterable[Metric]:
        families: list[Metric] = []
        try:
            families.extend(self._read())
            self._failing = False
        except Exception as exc:
            self.errors += 1
            if not self._failing:
                log.error("metrics: a collector failed (%s); serving the families read before it", type(exc).__name__)
            self._failing = True
        families.append(counter_family("scrape_errors", "Scrapes whose collector failed part-way", [],
                                       [((), self.errors)]))  # fmt: skip
        return families

    def describe(self) -> Iterable[Metric]:
        return ()  # unchecked names: the families depend on state (registering must not call read)
