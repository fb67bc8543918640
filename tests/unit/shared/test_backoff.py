"""The one backoff policy: ceilings double up to the maximum; full jitter in [0, d], equal jitter in [d/2, d]."""

from __future__ import annotations

import pytest

from broker._backoff import Attempts, Backoff


@pytest.mark.parametrize(("retry", "ceiling"), [(0, 0.5), (1, 1.0), (2, 2.0), (3, 3.0), (500, 3.0)])
def test_ceiling_doubles_from_initial_up_to_maximum(retry: int, ceiling: float) -> None:
    assert Backoff(0.5, 3.0).ceiling(retry) == ceiling


@pytest.mark.parametrize(
    ("jitter", "draw", "delay"), [("full", 0.0, 0.0), ("full", 1.0, 2.0), ("equal", 0.0, 1.0), ("equal", 1.0, 2.0)]
)
def test_jitter_bounds(jitter: str, draw: float, delay: float) -> None:
    backoff = Backoff(1.0, 10.0, jitter=jitter, rng=lambda: draw)  # type: ignore[arg-type]
    assert backoff.delay(1) == delay


def test_attempts_count_failures_and_start_over_after_a_reset() -> None:
    attempts = Attempts(Backoff(1.0, 10.0, rng=lambda: 1.0))
    assert [attempts.next(), attempts.next(), attempts.next()] == [1.0, 2.0, 4.0]
    attempts.reset()
    assert attempts.next() == 1.0
