"""One jittered exponential backoff policy, for every retry loop in the broker.

The ceiling before retry ``n`` (0 for the first) is ``min(maximum, initial * factor**n)``; the delay is drawn
from it with jitter so that many clients do not retry in step (AWS Architecture Blog, "Exponential Backoff And
Jitter"; gRPC connection-backoff.md):

* ``"full"``: uniform in ``[0, ceiling]``;
* ``"equal"``: uniform in ``[ceiling / 2, ceiling]``.

:class:`Attempts` counts failures for a loop that retries until it succeeds (and starts over after a success).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Attempts", "Backoff", "Jitter"]

Jitter = Literal["full", "equal"]
_MAX_EXPONENT = 64  # far past any cap: 2**64 times any useful initial delay exceeds any useful maximum


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays growing by ``factor`` from ``initial`` up to ``maximum`` seconds, with ``jitter``."""

    initial: float
    maximum: float
    jitter: Jitter = "equal"
    factor: float = 2.0
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def ceiling(self, retry: int) -> float:
        """The largest pause before retry number ``retry`` (0 for the first retry)."""
        return min(self.maximum, self.initial * self.factor ** min(retry, _MAX_EXPONENT))

    def delay(self, retry: int) -> float:
        """The pause before retry number ``retry`` (0 for the first retry), jittered."""
        ceiling = self.ceiling(retry)
        if self.jitter == "full":
            return self.rng() * ceiling
        return ceiling * (0.5 + self.rng() / 2)


class Attempts:
    """Consecutive failures of one retry loop: :meth:`next` gives the next pause, :meth:`reset` starts over."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.failures = 0

    def next(self) -> float:
        delay = self.backoff.delay(self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
