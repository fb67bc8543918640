"""The token service's reachability as one sidecar sees it, and when to look again.

States: ``unknown`` (never contacted yet), ``reachable``, ``unreachable``. Every contact counts: a successful
exchange or a refusal (the service answered) is a success, a transport failure or 5xx after the retries is a
failure. Each change of state is logged once (INFO when reached, WARNING when lost or never reached), never per
retry. Reachability is *reported* (``/v1/status``, logs), it is not readiness: a sidecar holding valid cached
tokens still serves its app while the token service is away.

:meth:`TokenServiceHealth.next_check` tells the prober when a probe is due: at once while ``unknown``; ``interval``
seconds after the last successful contact while ``reachable`` (so traffic replaces probes); after an exponential
backoff with jitter (from ``backoff_base`` up to ``backoff_max``) while ``unreachable``.
"""

from __future__ import annotations

import datetime
import logging
import random
import time
from collections.abc import Callable
from typing import Literal

from broker._backoff import Backoff

__all__ = ["HealthState", "TokenServiceHealth"]

log = logging.getLogger(__name__)

HealthState = Literal["unknown", "reachable", "unreachable"]
_MAX_REASON = 200


class TokenServiceHealth:
    """Reachability of one token service; see the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self._clock, self._monotonic = clock, monotonic
        self._backoff = Backoff(backoff_base, backoff_max, rng=rng)
        self.state: HealthState = "unknown"
        self.since = clock()
        self.last_error = ""
        self.failures = 0
        self._last_ok: float | None = None  # monotonic
        self._last_ok_wall: float | None = None
        self._retry_at = 0.0

    @property
    def reachable(self) -> bool:
        return self.state == "reachable"

    def success(self) -> None:
        """The token service answered (a token, a refusal, or its metadata)."""
        self._last_ok, self._last_ok_wall = self._monotonic(), self._clock()
        self.failures = 0
        if self.state != "reachable":
            verb = "reachable again" if self.state == "unreachable" else "reachable"
            log.info("token service %s is %s", self.name, verb)
            self._enter("reachable")

    def failure(self, reason: str) -> None:
        """The token service could not be reached (or kept failing) for ``reason`` (safe to log, no secret)."""
        self.last_error = reason[:_MAX_REASON]
        self.failures += 1
        self._retry_at = self._monotonic() + self._backoff.delay(self.failures - 1)  # jitter: no probe storms
        if self.state == "reachable":
            log.warning("token service %s is unreachable: %s", self.name, self.last_error)
        elif self.state == "unknown":
            log.warning("token service %s has not been reachable yet: %s", self.name, self.last_error)
        else:
            return
        self._enter("unreachable")

    def next_check(self, interval: float) -> float:
        """The monotonic time at which a probe is due (see the module docstring)."""
        if self.state == "unreachable":
            return self._retry_at
        if self._last_ok is None:
            return self._monotonic()
        return self._last_ok + interval

    def snapshot(self) -> dict[str, object]:
        """The state for ``/v1/status``: JSON-ready, no secret."""
        return {
            "issuer": self.name,
            "state": self.state,
            "since": _iso(self.since),
            "last_success": _iso(self._last_ok_wall) if self._last_ok_wall is not None else None,
            "last_error": self.last_error or None,
            "consecutive_failures": self.failures,
        }

    def _enter(self, state: HealthState) -> None:
        self.state = state
        self.since = self._clock()


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="seconds")
