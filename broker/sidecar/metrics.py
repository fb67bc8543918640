"""The sidecar's metrics, read at scrape time from what its parts count (no cost per request).

=====================================================  =============================================================
``sidecar_token_requests_total{result}``               one per request: ``hit`` (from the cache), ``miss`` (an
                                                       exchange gave the token), ``error`` (no token could be
                                                       given, or the workload is quarantined)
``sidecar_refreshes_total{outcome}``                   exchanges for the cache, ``ok`` or ``error``
``sidecar_exchange_duration_seconds``                  each exchange (retries included), also those that failed
``sidecar_svid_rotations_total``                       new X.509-SVIDs seen
``sidecar_svid_expiry_seconds``                        to the X.509-SVID's ``notAfter``
``sidecar_token_expiry_seconds{audience}``             to each cached token's expiry; at most ``max_audience_labels``
                                                       audiences (the rest: ``other``, the soonest of them)
``sidecar_feed_lag_seconds``                           since the revocation feed last spoke (event or heartbeat)
``sidecar_feed_behind``                                entries the feed announced that are not applied yet
``egress_requests_total{exception, outcome}``          egress proxy requests (``EgressStats``)
``egress_bytes_total{exception, direction}``           bytes ``sent`` (request bodies) and ``received`` (responses)
=====================================================  =============================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import Metric

from broker.identity.errors import IdentityError
from broker.identity.source import X509Source
from broker.metrics import PREFIX, CappedLabel, ScrapeCollector, counter_family, gauge_family, new_registry
from broker.sidecar.cache import TokenCache
from broker.sidecar.egress.proxy import EgressStats
from broker.verify.feed import RevocationFeedFollower
from broker.web.metrics import LATENCY_BUCKETS

__all__ = ["SidecarCollector", "sidecar_registry"]


@dataclass
class SidecarCollector:
    """Reads the sidecar's parts at scrape time: the token cache's counts and expiries, the SVID, the revocation
    feed follower's status and the egress proxy's counts (see the module docstring for the families)."""

    cache: TokenCache
    source: X509Source
    clock: Callable[[], float]
    audiences: CappedLabel
    follower: RevocationFeedFollower | None = None
    egress: EgressStats | None = None

    def collect(self) -> Iterable[Metric]:
        stats, now = self.cache.stats, self.clock()
        requests = [(("hit",), stats.hits), (("miss",), stats.misses), (("error",), stats.errors)]
        yield counter_family("sidecar_token_requests", "Token requests from the app", ["result"], requests)
        yield counter_family("sidecar_refreshes", "Exchanges for the cache", ["outcome"],
                             [(("ok",), stats.exchanges_ok), (("error",), stats.exchanges_failed)])  # fmt: skip
        yield counter_family("sidecar_svid_rotations", "New X.509-SVIDs seen", [], [((), stats.svid_rotations)])
        try:
            not_after = self.source.x509_svid().not_after.timestamp()
            yield gauge_family("sidecar_svid_expiry_seconds", "To the X.509-SVID's notAfter", [],
                               [((), not_after - now)])  # fmt: skip
        except IdentityError:
            pass  # no SVID yet: no sample (an alert on absent() says so)
        soonest: dict[str, float] = {}
        for audience, expires_at in self.cache.expiries():
            label = self.audiences(audience)
            soonest[label] = min(soonest.get(label, expires_at), expires_at)
        yield gauge_family("sidecar_token_expiry_seconds", "To each cached token's expiry", ["audience"],
                           [((label,), at - now) for label, at in soonest.items()])  # fmt: skip
        yield from self._feed()
        yield from self._egress()

    def _feed(self) -> Iterable[Metric]:
        if self.follower is None:
            return
        status = self.follower.status()
        since = status["seconds_since_contact"]
        if since is not None:
            yield gauge_family("sidecar_feed_lag_seconds", "Since the revocation feed last spoke", [], [((), since)])
        yield gauge_family("sidecar_feed_behind", "Feed entries announced, not yet applied", [],
                           [((), status["lag"])])  # fmt: skip

    def _egress(self) -> Iterable[Metric]:
        if self.egress is None:
            return
        yield counter_family("egress_requests", "Egress proxy requests", ["exception", "outcome"],
                             [(key, count) for key, count in self.egress.requests.items()])  # fmt: skip
        yield counter_family("egress_bytes", "Egress proxy bytes", ["exception", "direction"],
                             [(key, count) for key, count in self.egress.bytes.items()])  # fmt: skip


def sidecar_registry(collector: SidecarCollector) -> CollectorRegistry:
    """A registry with ``collector`` and the exchange latency histogram fed by the cache."""
    registry = new_registry("sidecar")
    registry.register(ScrapeCollector(collector.collect))
    exchange = Histogram(f"{PREFIX}sidecar_exchange_duration_seconds", "Each exchange for the cache, retries included",
                         buckets=LATENCY_BUCKETS, registry=registry)  # fmt: skip
    collector.cache.stats.exchange_observers.append(exchange.observe)
    return registry
