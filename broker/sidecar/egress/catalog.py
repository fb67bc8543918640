"""The exceptions this workload may use now, as the token service last listed them (``GET /v1/apikeys``).

The egress proxy routes by it: a target no entry covers is refused, and a local route names an entry. It is fetched
when the proxy starts, every ``refresh`` seconds after that, and on demand when a request names a target or a name
it does not know (an exception added a moment ago), at most once every ``min_interval`` seconds however many such
requests arrive, all of them sharing the one fetch. A failed fetch keeps the last catalog: it holds no secret, and
each use still needs a grant the token service checks afresh. An exception that leaves the catalog (revoked,
expired, no longer allowed for this workload) has its held secret dropped at once (``on_change`` listeners).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from broker.apikeys.grant import Catalog, CatalogEntry
from broker.sidecar.egress.client import ApiKeyLink, ApiKeyRefusedError, ApiKeyServiceUnavailableError
from broker.sidecar.egress.routing import Destination

__all__ = ["CatalogView"]

log = logging.getLogger(__name__)

_FAILURE_RETRY = 5.0  # seconds before a failed periodic fetch is tried again (at most ``refresh``)


class CatalogView:
    """The last catalog fetched through ``link`` (see the module docstring)."""

    def __init__(
        self,
        link: ApiKeyLink,
        *,
        refresh: float = 30.0,
        min_interval: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._link = link
        self.refresh_interval = refresh
        self._min_interval = min_interval
        self._monotonic = monotonic
        self._by_name: dict[str, CatalogEntry] = {}
        self.loaded = False
        self.fetches = 0  # for tests and status
        self._flight: asyncio.Task[bool] | None = None
        self._last_attempt: float | None = None
        self._failing = False
        self.on_change: list[Callable[[Catalog], None]] = []

    @property
    def fetching(self) -> bool:
        return self._flight is not None

    @property
    def entries(self) -> tuple[CatalogEntry, ...]:
        return tuple(self._by_name.values())

    def by_name(self, name: str) -> CatalogEntry | None:
        return self._by_name.get(name)

    def covering(self, destination: Destination) -> list[CatalogEntry]:
        """The entries whose target covers ``destination`` (https, host, port, path)."""
        d = destination
        return [e for e in self._by_name.values() if e.target.matches("https", d.host, d.port, d.path)]

    async def refresh(self) -> bool:
        """Fetch the catalog now (sharing a fetch under way); False if it failed (the last one is kept)."""
        if self._flight is None:
            self._flight = asyncio.get_running_loop().create_task(self._fetch())
            self._flight.add_done_callback(self._landed)
        return await asyncio.shield(self._flight)

    async def refresh_on_miss(self) -> bool:
        """Fetch again for a request that named something unknown, unless a fetch began under ``min_interval`` ago."""
        last = self._last_attempt
        if self._flight is None and last is not None and self._monotonic() - last < self._min_interval:
            return False
        return await self.refresh()

    def _landed(self, _: asyncio.Task[bool]) -> None:
        self._flight = None

    async def run(self) -> None:
        """Refresh every ``refresh`` seconds (sooner after a failure) until cancelled."""
        while True:
            ok = await self.refresh()
            await asyncio.sleep(self.refresh_interval if ok else min(_FAILURE_RETRY, self.refresh_interval))

    async def _fetch(self) -> bool:
        self._last_attempt = self._monotonic()
        self.fetches += 1
        try:
            catalog = await self._link.catalog()
        except (ApiKeyServiceUnavailableError, ApiKeyRefusedError) as exc:
            if not self._failing:
                log.warning("API-key catalog not fetched (keeping the last one): %s", exc.description)
            self._failing = True
            return False
        if self._failing:
            log.info("API-key catalog fetched again")
        self._failing = False
        self._by_name = {entry.name: entry for entry in catalog.entries}
        self.loaded = True
        for listener in self.on_change:
            listener(catalog)
        return True
