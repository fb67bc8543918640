"""What the egress proxy tells the token service: uses and refusals, aggregated, every few seconds.

* **Uses** are counted per (exception, secret version, target origin) with the time of the last one: a busy app
  costs one line per flush, not one per request.
* **Refusals** are kept per (exception, target, reason) with the time of the first one in the flush window: a loop
  of refused requests is one line, and the first attempt is the one an investigation wants.
* **Bounded.** At most :data:`~broker.apikeys.grant.MAX_REPORT_ITEMS` of each are held (what one report may
  carry); beyond that new keys are counted as lost and the loss is logged at the next flush.
* **Never in the way.** Requests only update dictionaries. :meth:`EgressReporter.run` sends a report every
  ``interval`` seconds; a report that does not get through is merged back and sent with the next one (one the
  token service refuses, 4xx, is dropped with a warning: it would be refused again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from broker.apikeys.grant import MAX_REPORT_ITEMS, EgressRefusal, EgressReport, UseCount
from broker.sidecar.egress.client import ApiKeyLink, ApiKeyRefusedError, ApiKeyServiceUnavailableError

__all__ = ["EgressReporter"]

log = logging.getLogger(__name__)

_UseKey = tuple[str, int, str]
_RefusalKey = tuple[str | None, str, str]


@dataclass(slots=True)
class _Uses:
    count: int
    last: float


class EgressReporter:
    """Aggregates uses and refusals and sends them through ``link`` (see the module docstring)."""

    def __init__(
        self,
        link: ApiKeyLink,
        *,
        interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        max_items: int = MAX_REPORT_ITEMS,
    ) -> None:
        self._link = link
        self.interval = interval
        self._clock = clock
        self._max = min(max_items, MAX_REPORT_ITEMS)
        self._uses: dict[_UseKey, _Uses] = {}
        self._refusals: dict[_RefusalKey, float] = {}
        self.lost = 0
        self.sent = 0  # reports accepted (for tests and status)

    def used(self, name: str, version: int, target: str) -> None:
        key = (name, version, target)
        held = self._uses.get(key)
        if held is not None:
            held.count += 1
            held.last = self._clock()
        elif len(self._uses) < self._max:
            self._uses[key] = _Uses(1, self._clock())
        else:
            self.lost += 1

    def refused(self, name: str | None, target: str, reason: str) -> None:
        key = (name, target[:2048], reason)
        if key in self._refusals:
            return
        if len(self._refusals) < self._max:
            self._refusals[key] = self._clock()
        else:
            self.lost += 1

    def pending(self) -> int:
        return len(self._uses) + len(self._refusals)

    async def flush(self) -> bool:
        """Send what is held; on failure keep it for the next flush. False if it was not sent."""
        if self.lost:
            log.warning("egress report: %d use(s) or refusal(s) could not be recorded (over %d held)",
                        self.lost, self._max)  # fmt: skip
            self.lost = 0
        if not self._uses and not self._refusals:
            return True
        uses, refusals = self._uses, self._refusals
        self._uses, self._refusals = {}, {}
        try:
            await self._link.report(_report(uses, refusals))
        except ApiKeyServiceUnavailableError as exc:
            log.info("egress report not sent (kept for the next one): %s", exc.description)
            self._merge(uses, refusals)
            return False
        except ApiKeyRefusedError as exc:  # sending it again would be refused again
            log.warning("egress report refused by the token service (dropped): %s", exc.description)
            return False
        self.sent += 1
        return True

    async def run(self) -> None:
        """Flush every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    def _merge(self, uses: dict[_UseKey, _Uses], refusals: dict[_RefusalKey, float]) -> None:
        for key, held in uses.items():
            newer = self._uses.get(key)
            if newer is not None:
                newer.count += held.count
            elif len(self._uses) < self._max:
                self._uses[key] = held
            else:
                self.lost += 1
        for rkey, at in refusals.items():
            if rkey in self._refusals or len(self._refusals) < self._max:
                self._refusals[rkey] = min(at, self._refusals.get(rkey, at))
            else:
                self.lost += 1


def _at(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _report(uses: dict[_UseKey, _Uses], refusals: dict[_RefusalKey, float]) -> EgressReport:
    return EgressReport(
        uses=tuple(UseCount(name, version, target, min(held.count, 10**9), _at(held.last))
                   for (name, version, target), held in uses.items()),
        refusals=tuple(EgressRefusal(name, target, reason, _at(at)) for (name, target, reason), at in refusals.items()),
    )  # fmt: skip
