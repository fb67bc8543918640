"""The token service's metrics: its request instruments, and what its parts already know, read at scrape time.

Per request (:mod:`broker.web.metrics`): ``requests_total``, ``request_duration_seconds``,
``exchange_duration_seconds``, ``tokens_issued_total`` and, when configured, ``client_requests_total``.
Per store write: ``store_operation_duration_seconds{operation}`` and ``store_errors_total{operation}`` (the
issuance ledger's and the audit trail's batch writes, :func:`observe_store_writes`). Per sample:
``clock_skew_seconds{source}``, the server's clock minus a credential's ``iat``
(:class:`~broker.tokens.drift.DriftTracker` observers). Read at scrape (:class:`TokenServiceCollector`):

=========================================================  =========================================================
``jwt_svid_cache_total{result}``                           validated JWT-SVID memo hits and misses
``replay_refusals_total{cache}``                           ``jti`` replays refused: client assertions, DPoP proofs
``revocations_total{kind}``                                revocation-log entries applied since start: ``token``,
                                                           ``key``, ``subject`` (quarantine), ``exception``, ``release``
``quarantined_subjects``                                   quarantines in force
``signing_key_age_seconds``                                since the active key began signing
``signing_key_next_rotation_seconds``                      to its scheduled rotation (negative: overdue)
``signing_key_rotations_total{outcome}``                   scheduled rotations, and housekeeping rounds that failed
``audit_records_dropped_total``                             ``token.refused`` records a full audit queue dropped
``clock_drift_worst_seconds``                              the largest drift among tracked clients (its magnitude)
``feed_followers``                                         revocation-feed followers connected to this replica
``apikey_exceptions{state}``                               exceptions by status
``apikey_exception_expiry_seconds{exception}``             to each live exception's ``expires_at``
``apikey_exception_review_due_seconds{exception}``         to its next review (negative: overdue)
=========================================================  =========================================================

The exceptions are read from the store at most every :data:`APIKEY_REFRESH` seconds, before a scrape
(:meth:`TokenServiceCollector.refresh`); a store that does not answer keeps the last values.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric

from broker.apikeys.model import ApiKeyException, Status, review_due, status_at
from broker.apikeys.registry import ApiKeyRegistry
from broker.config import MetricsSettings
from broker.metrics import PREFIX, ScrapeCollector, counter_family, gauge_family, new_registry
from broker.oauth.replay import CountingReplayCache
from broker.server.assertions import ClientAssertions
from broker.server.feed import FEED
from broker.server.housekeeping import Housekeeper
from broker.server.recorder import Recorder
from broker.server.revocations import ReplicaRevocations
from broker.server.state import SVID_MEMO
from broker.server.stateful import ServiceState
from broker.tokens.drift import DriftSource, DriftTracker
from broker.tokens.keyring import Keyring
from broker.tokens.keystore import KeyState
from broker.tokens.rotation import signing_since
from broker.tokens.svid_cache import ValidatedSvidCache
from broker.web.front import FRONT
from broker.web.metrics import (
    LATENCY_BUCKETS,
    HttpMetrics,
    MetricsListener,
    request_metrics_middleware,
    start_metrics_listener,
)

__all__ = ["APIKEY_REFRESH", "SKEW_BUCKETS", "ServiceMetrics", "TokenServiceCollector", "observe_clock_skew"]

log = logging.getLogger(__name__)

APIKEY_REFRESH = 30.0
APIKEY_READ_TIMEOUT = 1.0
SKEW_BUCKETS = (-300.0, -60.0, -30.0, -10.0, -5.0, -1.0, 0.0, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)


def observe_store_writes(recorder: Recorder, registry: CollectorRegistry) -> None:
    """``store_operation_duration_seconds{operation}`` and ``store_errors_total{operation}`` of the two batch
    writers: the issuance ledger (``record_issuance``) and the audit trail (``audit_append``)."""
    duration = Histogram(f"{PREFIX}store_operation_duration_seconds", "Store writes (one batch each)", ["operation"],
                         buckets=LATENCY_BUCKETS, registry=registry)  # fmt: skip
    errors = Counter(f"{PREFIX}store_errors", "Store writes that failed (retried)", ["operation"], registry=registry)
    for operation, writer in (("record_issuance", recorder.tokens), ("audit_append", recorder.trail.writer)):
        timed, failed = duration.labels(operation), errors.labels(operation)
        failed.inc(0)

        def observe(seconds: float, ok: bool, timed: Any = timed, failed: Any = failed) -> None:
            timed.observe(seconds)
            if not ok:
                failed.inc()

        writer.write_observers.append(observe)


def observe_clock_skew(drift: DriftTracker, registry: CollectorRegistry) -> None:
    """``clock_skew_seconds{source}``: every ``iat`` sample the drift tracker records."""
    skew = Histogram(f"{PREFIX}clock_skew_seconds", "Server clock minus a credential's iat", ["source"],
                     buckets=SKEW_BUCKETS, registry=registry)  # fmt: skip
    children = {source: skew.labels(source.value) for source in DriftSource}
    drift.observers.append(lambda source, seconds: children[source].observe(seconds))


@dataclass
class TokenServiceCollector:
    """What the parts of one replica know, as metric families (see the module docstring)."""

    keyring: Keyring
    svid_memo: ValidatedSvidCache
    clock: Callable[[], float] = time.time
    recorder: Recorder | None = None
    housekeeper: Housekeeper | None = None
    drift: DriftTracker | None = None
    replays: dict[str, CountingReplayCache] = field(default_factory=dict)
    revocation_counts: Callable[[], dict[str, int]] | None = None
    quarantined: Callable[[], int] | None = None
    feed_followers: Callable[[], int] | None = None
    apikeys: ApiKeyRegistry | None = None
    _exceptions: tuple[ApiKeyException, ...] = ()
    _exceptions_read_at: float = float("-inf")

    def register(self, registry: CollectorRegistry) -> None:
        registry.register(ScrapeCollector(self.collect))

    async def refresh(self) -> None:
        """Re-read the API-key exceptions if the last attempt is older than :data:`APIKEY_REFRESH`, waiting at
        most :data:`APIKEY_READ_TIMEOUT`: a store that is down must not stall the scrape (the store's own errors
        are what the alerts need then). A failed read keeps the last values and is retried a period later."""
        if self.apikeys is None or time.monotonic() - self._exceptions_read_at < APIKEY_REFRESH:
            return
        self._exceptions_read_at = time.monotonic()  # also after a failure: one attempt per period
        try:
            async with asyncio.timeout(APIKEY_READ_TIMEOUT):
                self._exceptions = await self.apikeys.list_all()
        except Exception as exc:  # never the message: a driver's may quote row values
            log.warning("metrics: could not read the API-key exceptions (%s); keeping the last values",
                        type(exc).__name__)  # fmt: skip

    def collect(self) -> Iterable[Metric]:
        memo = self.svid_memo
        yield counter_family("jwt_svid_cache", "Validated JWT-SVID memo lookups", ["result"],
                             [(("hit",), memo.hits), (("miss",), memo.misses)])  # fmt: skip
        yield counter_family("replay_refusals", "jti replays refused", ["cache"],
                             [((name, ), cache.refusals) for name, cache in self.replays.items()])  # fmt: skip
        yield from self._signing_key()
        yield from self._revocations()
        yield from self._service()
        yield from self._apikeys()

    def _signing_key(self) -> Iterable[Metric]:
        now = datetime.fromtimestamp(self.clock(), UTC)
        active = [view for view in self.keyring.views() if view.state is KeyState.ACTIVE]
        if active:
            began, due = signing_since(active[0]), self.keyring.schedule.rotation_due_at(active[0])
            yield gauge_family("signing_key_age_seconds", "Since the active signing key began signing", [],
                               [((), (now - began).total_seconds())])  # fmt: skip
            yield gauge_family("signing_key_next_rotation_seconds", "To the scheduled rotation (negative: overdue)",
                               [], [((), (due - now).total_seconds())])  # fmt: skip
        keeper = self.housekeeper
        if keeper is not None:
            yield counter_family("signing_key_rotations", "Scheduled rotations, and housekeeping rounds that failed",
                                 ["outcome"], [(("ok",), keeper.rotations), (("error",), keeper.failures)])  # fmt: skip

    def _revocations(self) -> Iterable[Metric]:
        if self.revocation_counts is not None:
            counts = self.revocation_counts()
            yield counter_family("revocations", "Revocation-log entries applied since start, by kind", ["kind"],
                                 [((kind,), float(count)) for kind, count in sorted(counts.items())])  # fmt: skip
        if self.quarantined is not None:
            yield gauge_family("quarantined_subjects", "Quarantines in force", [], [((), self.quarantined())])

    def _service(self) -> Iterable[Metric]:
        if self.recorder is not None:
            yield counter_family("audit_records_dropped", "token.refused records the full audit queue dropped", [],
                                 [((), self.recorder.refusals_not_recorded)])  # fmt: skip
        if self.drift is not None:
            worst = self.drift.worst(1)
            yield gauge_family("clock_drift_worst_seconds", "Largest clock drift among tracked clients (magnitude)",
                               [], [((), abs(worst[0].drift) if worst else 0.0)])  # fmt: skip
        if self.feed_followers is not None:
            yield gauge_family("feed_followers", "Revocation-feed followers", [], [((), self.feed_followers())])

    def _apikeys(self) -> Iterable[Metric]:
        if self.apikeys is None:
            return
        now = datetime.fromtimestamp(self.clock(), UTC)
        counts = dict.fromkeys(Status, 0)
        expiry, review = [], []
        for record in self._exceptions:
            status = status_at(record, now)
            counts[status] += 1
            if status in (Status.ACTIVE, Status.REVIEW_OVERDUE):
                expiry.append(((record.name,), (record.expires_at - now).total_seconds()))
                review.append(((record.name,), (review_due(record) - now).total_seconds()))
        yield gauge_family("apikey_exceptions", "API-key exceptions by status", ["state"],
                           [((status.value,), count) for status, count in counts.items()])  # fmt: skip
        yield gauge_family("apikey_exception_expiry_seconds", "To each live exception's expires_at", ["exception"],
                           expiry)  # fmt: skip
        yield gauge_family("apikey_exception_review_due_seconds", "To each live exception's review (negative: "
                           "overdue)", ["exception"], review)  # fmt: skip


class ServiceMetrics:
    """One replica's metrics: the :meth:`mounter` mounts them on the app before it starts, :meth:`start` serves
    the listener after."""

    def __init__(self, settings: MetricsSettings) -> None:
        self.settings = settings
        self.registry = new_registry("token_service")
        labels = settings.max_spiffe_id_labels if settings.spiffe_id_labels else None
        self.http = HttpMetrics(self.registry, spiffe_id_labels=labels)
        self.collector: TokenServiceCollector | None = None
        self.listener: MetricsListener | None = None

    def mounter(
        self,
        state: ServiceState,
        revocations: ReplicaRevocations,
        assertions: ClientAssertions,
        apikeys: ApiKeyRegistry | None,
        clock: Callable[[], float],
    ) -> Callable[[web.Application], None]:
        def mount(app: web.Application) -> None:
            front = app.get(FRONT)
            if front is not None:
                front.metrics = self.http  # the folded middleware counts (broker.web.front)
            else:
                app.middlewares.insert(0, request_metrics_middleware(self.http))  # type: ignore[arg-type]
            observe_clock_skew(assertions.drift, self.registry)
            observe_store_writes(state.recorder, self.registry)
            feed = app.get(FEED)
            self.collector = TokenServiceCollector(
                keyring=state.keyring, svid_memo=app[SVID_MEMO], clock=clock, recorder=state.recorder,
                housekeeper=state.housekeeper, drift=assertions.drift,
                replays={"client_assertion": assertions.assertion_replay, "dpop_proof": assertions.proof_replay},
                revocation_counts=lambda: revocations.index.applied,
                quarantined=lambda: len(revocations.index.quarantines(datetime.fromtimestamp(clock(), UTC))),
                feed_followers=None if feed is None else lambda: len(feed.broadcaster),
                apikeys=apikeys,
            )  # fmt: skip
            self.collector.register(self.registry)

        return mount

    async def start(self) -> None:
        """Serve ``/metrics`` where ``[metrics]`` says, if anywhere."""
        if not self.settings.listens:
            return
        collector = self.collector
        refresh = [] if collector is None else [collector.refresh]
        settings = self.settings
        self.listener = await start_metrics_listener(self.registry, host=settings.host, port=settings.port,
                                                     socket_path=settings.socket, before_scrape=refresh)  # fmt: skip
        where = f"{settings.host}:{self.listener.port}" if self.listener.port is not None else settings.socket
        log.info("metrics on %s/metrics", where)

    async def aclose(self) -> None:
        if self.listener is not None:
            await self.listener.aclose()
