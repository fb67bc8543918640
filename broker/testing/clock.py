"""A manual clock: the ``clock: Callable[[], float]`` seam of the broker's components, moved by the test.

Wall-clock (``time.time``) and monotonic (``time.monotonic``) parameters both take it: it returns seconds as a
float and only changes when the test sets :attr:`ManualClock.now` or calls :meth:`ManualClock.advance`.
"""

from __future__ import annotations

__all__ = ["ManualClock"]

DEFAULT_START = 1_800_000_000.0  # 2027-01-15T08:00:00Z: a fixed wall-clock time


class ManualClock:
    """A settable clock (seconds); ``clock()`` reads it, ``clock.now = t`` or ``clock.advance(s)`` moves it."""

    def __init__(self, now: float = DEFAULT_START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __repr__(self) -> str:
        return f"ManualClock(now={self.now!r})"
