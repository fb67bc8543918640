"""Retry timing: exponential backoff with full jitter (delay drawn uniformly from [0, min(cap, base * 2^n)]).

The delay itself is :class:`broker._backoff.Backoff` (``jitter="full"``); this adds the number of attempts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from broker._backoff import Backoff

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; before try ``n+1`` wait ``uniform(0, min(max_delay, base_delay * 2**n))``."""

    attempts: int = 4
    base_delay: float = 0.1
    max_delay: float = 2.0
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("attempts must be >= 1 and delays >= 0")

    def delay(self, retry: int) -> float:
        """The pause before retry number ``retry`` (0 for the first retry), with full jitter."""
        return Backoff(self.base_delay, self.max_delay, jitter="full", rng=self.rng).delay(retry)
