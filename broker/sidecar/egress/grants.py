"""Granted secrets, held in memory only and never past their time.

* **Hold.** A grant is held for its lifetime (``hold_until`` minus ``granted_at``) counted from when it was asked
  for: never past ``hold_until`` in the token service's time, whatever the skew between the two clocks or the
  network delay (a sidecar clock ahead does not make every grant look expired; one behind does not stretch it).
  Nothing is written to disk; a :class:`~broker.apikeys.grant.Grant`'s repr never shows its secret.
* **Refresh.** Past ``refresh_fraction`` of its lifetime the grant is still used while one background request
  replaces it. Requests for a name without a usable grant share one request to the token service (single flight,
  shielded so a disconnecting app does not cancel it for the others).
* **Token service down.** A held grant keeps being used until its time is up; then the proxy answers 503
  ``temporarily_unavailable``. **Token service refuses** (403/404: suspended, revoked, expired, not allowed, this
  workload quarantined): the held grant is dropped at once and the request is refused (403 ``not_granted``).
* **Revocation feed** (:meth:`GrantCache.feed_changed`, called by
  :class:`~broker.sidecar.revocations.RevocationWatcher` after every entry or snapshot): a grant of an exception
  withdrawn at or after its ``granted_at`` is dropped at once, and one arriving later from a request sent before
  the withdrawal is refused when it lands. While this workload is quarantined (until the feed says it is released,
  or its ``until`` passes) every grant is dropped and none is fetched. A withdrawal seen is never undone by a cached
  grant: only a new grant, made after it, is used.
* **Catalog.** An exception that leaves the catalog has its grant dropped (:meth:`GrantCache.retain`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from broker.apikeys.grant import Grant
from broker.events.revocations import RevocationIndex
from broker.sidecar.egress.client import ApiKeyLink, ApiKeyRefusedError, ApiKeyServiceUnavailableError
from broker.sidecar.egress.errors import EgressUnavailableError, NotGrantedError

__all__ = ["GrantCache"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Held:
    grant: Grant
    expires: float
    refresh_at: float


def _never_withdrawn(name: str) -> datetime | None:
    return None


class GrantCache:
    """Grants by exception name for one workload (see the module docstring)."""

    def __init__(
        self, link: ApiKeyLink, *, clock: Callable[[], float] = time.time, refresh_fraction: float = 0.75
    ) -> None:
        self._link = link
        self._clock = clock
        self._refresh_fraction = refresh_fraction
        self._held: dict[str, _Held] = {}
        self._flights: dict[str, asyncio.Task[Grant]] = {}
        self._withdrawn_at: Callable[[str], datetime | None] = _never_withdrawn
        self._suspended_until = -math.inf
        self.requests = 0  # grants asked for (for tests and status)

    def __len__(self) -> int:
        return len(self._held)

    async def get(self, name: str) -> Grant:
        """A usable grant of ``name``: the held one, or a new one from the token service."""
        if self.suspended:
            raise NotGrantedError(
                "this workload is quarantined: no API key is injected until it is released", name=name
            )
        now = self._clock()
        held = self._held.get(name)
        if held is not None and self._usable(held, now):
            if now >= held.refresh_at and name not in self._flights:
                self._start(name).add_done_callback(_quiet)
            return held.grant
        self._drop(name)
        try:
            return await asyncio.shield(self._flights.get(name) or self._start(name))
        except ApiKeyRefusedError as exc:
            raise NotGrantedError(f"the token service refused exception {name}: {exc.refusal or exc.error_code}",
                                  name=name) from None  # fmt: skip
        except ApiKeyServiceUnavailableError as exc:
            raise EgressUnavailableError(
                f"no granted secret of exception {name} is held and the token service is unavailable "
                f"({exc.description})", name=name
            ) from None  # fmt: skip

    def held_for(self, name: str) -> float:
        """Seconds the held grant of ``name`` stays usable (0 if none is held)."""
        held = self._held.get(name)
        return 0.0 if held is None else max(0.0, held.expires - self._clock())

    @property
    def suspended(self) -> bool:
        return self._clock() < self._suspended_until

    def feed_changed(self, index: RevocationIndex, *, quarantined_until: float | None) -> None:
        """Apply the revocation feed: drop withdrawn grants; while quarantined drop all and fetch none."""
        self._withdrawn_at = index.withdrawn_at
        was = self.suspended
        self._suspended_until = -math.inf if quarantined_until is None else quarantined_until
        quarantined = self.suspended
        if quarantined != was:
            log.warning("API-key injection %s: this workload is %s", "stopped" if quarantined else "resumed",
                        "quarantined" if quarantined else "no longer quarantined")  # fmt: skip
        for name in list(self._held):
            if quarantined or self._withdrawn(self._held[name].grant):
                self._drop(name)
                log.info("dropped the held secret of API-key exception %s (%s)", name,
                         "quarantined" if quarantined else "withdrawn")  # fmt: skip

    def retain(self, names: Iterable[str]) -> None:
        """Drop the grants of exceptions not in ``names`` (the catalog no longer lists them)."""
        keep = set(names)
        for name in [name for name in self._held if name not in keep]:
            self._drop(name)
            log.info("dropped the held secret of API-key exception %s (no longer in the catalog)", name)

    def clear(self) -> None:
        self._held.clear()

    async def settled(self) -> None:
        """Wait until the grant requests under way have landed (or failed)."""
        if self._flights:
            await asyncio.gather(*self._flights.values(), return_exceptions=True)

    def _usable(self, held: _Held, now: float) -> bool:
        return now < held.expires and not self._withdrawn(held.grant)

    def _withdrawn(self, grant: Grant) -> bool:
        at = self._withdrawn_at(grant.name)
        return at is not None and at >= grant.granted_at

    def _drop(self, name: str) -> None:
        self._held.pop(name, None)

    def _start(self, name: str) -> asyncio.Task[Grant]:
        task = asyncio.get_running_loop().create_task(self._fetch(name), name=f"apikey-grant-{name}")
        self._flights[name] = task
        task.add_done_callback(lambda _: self._flights.pop(name, None))
        return task

    async def _fetch(self, name: str) -> Grant:
        self.requests += 1
        asked = self._clock()
        try:
            grant = await self._link.grant(name)
        except ApiKeyRefusedError:
            self._drop(name)  # the token service said no: fail closed at once
            raise
        if self.suspended:
            raise ApiKeyRefusedError(403, "access_denied", "this workload is quarantined")
        if self._withdrawn(grant):
            self._drop(name)
            raise ApiKeyRefusedError(403, "access_denied", f"exception {name} was withdrawn (revocation feed)")
        lifetime = max(grant.hold_until.timestamp() - grant.granted_at.timestamp(), 0.0)
        self._held[name] = _Held(grant, asked + lifetime, asked + lifetime * self._refresh_fraction)
        return grant


def _quiet(task: asyncio.Task[Grant]) -> None:
    """A background refresh's failure is already handled (kept or dropped); mark it retrieved."""
    if not task.cancelled():
        task.exception()
