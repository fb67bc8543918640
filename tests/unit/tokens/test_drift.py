"""Tests for broker.tokens.drift: per-client clock drift from the ``iat`` of what clients sign."""

from __future__ import annotations

import logging

import pytest

from broker.tokens.drift import SAMPLES_PER_CLIENT, DriftReport, DriftSource, DriftTracker

NOW = 1_800_000_000.0
LEEWAY = 30.0
A, B, C = "spiffe://example.org/a", "billing", "spiffe://example.org/c"
ASSERTION, DPOP = DriftSource.ASSERTION, DriftSource.DPOP


def feed(tracker: DriftTracker, client: str, drifts: list[float], source: DriftSource = ASSERTION) -> None:
    for step, drift in enumerate(drifts):
        now = NOW + step
        tracker.record(client, source, now=now, iat=now - drift)


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "broker.tokens.drift" and r.levelno == logging.WARNING]


def test_report_holds_the_samples_median_and_extremes() -> None:
    tracker = DriftTracker(leeway=LEEWAY)
    feed(tracker, A, [1.0, -2.0, 4.0])
    assert tracker.report(A, ASSERTION) == DriftReport(A, ASSERTION, 3, 1.0, -2.0, 4.0, NOW + 2)
    assert tracker.report(A, DPOP) is None
    assert tracker.report(B, ASSERTION) is None


def test_report_json_is_rounded_and_names_the_source() -> None:
    tracker = DriftTracker(leeway=LEEWAY)
    tracker.record(A, DPOP, now=NOW, iat=NOW - 1.23456)
    report = tracker.report(A, DPOP)
    assert report is not None
    assert report.to_json() == {
        "client": A,
        "source": "dpop_proof",
        "samples": 1,
        "drift_seconds": 1.235,
        "median_seconds": 1.235,
        "min_seconds": 1.235,
        "max_seconds": 1.235,
        "last_seen": NOW,
    }


def test_window_keeps_only_the_latest_samples() -> None:
    tracker = DriftTracker(leeway=LEEWAY)
    feed(tracker, A, [100.0] * 10 + [1.0] * SAMPLES_PER_CLIENT)
    report = tracker.report(A, ASSERTION)
    assert report is not None and (report.samples, report.maximum) == (SAMPLES_PER_CLIENT, 1.0)


def test_one_warning_per_client_when_the_median_passes_half_the_leeway(caplog: pytest.LogCaptureFixture) -> None:
    tracker = DriftTracker(leeway=LEEWAY)
    with caplog.at_level(logging.WARNING, logger="broker.tokens.drift"):
        feed(tracker, A, [LEEWAY / 2] * 5)  # at half: not past it
        assert warnings(caplog) == []
        feed(tracker, A, [20.0] * 20)
        feed(tracker, B, [-20.0] * 20)  # a clock ahead drifts as much
    logged = warnings(caplog)
    assert len(logged) == 2
    assert A in logged[0].getMessage() and "client_assertion" in logged[0].getMessage()
    assert B in logged[1].getMessage()


def test_a_client_drifting_in_assertions_and_dpop_proofs_gets_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    tracker = DriftTracker(leeway=LEEWAY)
    with caplog.at_level(logging.WARNING, logger="broker.tokens.drift"):
        feed(tracker, A, [20.0] * 3)
        feed(tracker, A, [20.0] * 3, source=DPOP)
    assert len(warnings(caplog)) == 1


def test_one_outlier_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    tracker = DriftTracker(leeway=LEEWAY)
    with caplog.at_level(logging.WARNING, logger="broker.tokens.drift"):
        feed(tracker, A, [1.0, 1.0, 500.0, 1.0])
    assert warnings(caplog) == []


def test_warning_rearms_after_the_drift_comes_back_under_a_quarter(caplog: pytest.LogCaptureFixture) -> None:
    tracker = DriftTracker(leeway=LEEWAY)
    with caplog.at_level(logging.WARNING, logger="broker.tokens.drift"):
        feed(tracker, A, [20.0] * 3)
        feed(tracker, A, [10.0] * SAMPLES_PER_CLIENT)  # under half, over a quarter: still warned
        assert len(warnings(caplog)) == 1
        feed(tracker, A, [0.0] * SAMPLES_PER_CLIENT)
        feed(tracker, A, [20.0] * SAMPLES_PER_CLIENT)
    assert len(warnings(caplog)) == 2


def test_sources_are_tracked_apart(caplog: pytest.LogCaptureFixture) -> None:
    tracker = DriftTracker(leeway=LEEWAY)
    feed(tracker, A, [1.0])
    feed(tracker, A, [5.0], source=DPOP)
    assert [r.source for r in tracker.worst()] == [DPOP, ASSERTION]


def test_worst_orders_by_magnitude_of_the_median_and_limits() -> None:
    tracker = DriftTracker(leeway=LEEWAY)
    feed(tracker, A, [2.0])
    feed(tracker, B, [-9.0])
    feed(tracker, C, [5.0])
    assert [(r.client, r.median) for r in tracker.worst()] == [(B, -9.0), (C, 5.0), (A, 2.0)]
    assert [r.client for r in tracker.worst(limit=1)] == [B]


def test_the_number_of_clients_is_bounded_least_recently_seen_first() -> None:
    tracker = DriftTracker(leeway=LEEWAY, max_clients=2)
    feed(tracker, A, [1.0])
    feed(tracker, B, [1.0])
    feed(tracker, A, [1.0])  # A seen again: B is now the least recent
    feed(tracker, C, [1.0])
    assert tracker.report(B, ASSERTION) is None
    assert tracker.report(A, ASSERTION) is not None and tracker.report(C, ASSERTION) is not None
    assert len(tracker.worst(limit=10)) == 2


def test_a_jwt_svid_drift_is_its_freshest_sample_not_its_median(caplog: pytest.LogCaptureFixture) -> None:
    """A SPIRE agent reuses a JWT-SVID for half its lifetime: ``now - iat`` is the offset plus the token's age, so
    a client in sync whose SVIDs are used minutes after minting must not read as drifting."""
    tracker = DriftTracker(leeway=LEEWAY)
    with caplog.at_level(logging.WARNING, logger="broker.tokens.drift"):
        feed(tracker, A, [0.4, 120.0, 240.0], source=DriftSource.JWT_SVID)
        report = tracker.report(A, DriftSource.JWT_SVID)
        assert report is not None and (round(report.drift, 3), report.median) == (0.4, 120.0)
        assert not warnings(caplog)
        feed(tracker, B, [-20.0, 100.0, 200.0], source=DriftSource.JWT_SVID)
    assert [r.client for r in tracker.worst()] == [B, A], "a clock ahead shows in every sample, the freshest too"
    assert len(warnings(caplog)) == 1
