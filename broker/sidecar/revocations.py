"""The sidecar on the revocation feed: revoked tokens leave its cache, and its own quarantine stops it serving.

The sidecar follows the token service's feed with the same follower a resource server uses
(:class:`~broker.verify.feed.RevocationFeedFollower`), and after every entry or snapshot:

* **its own quarantine**: if a quarantine in force matches the workload's SPIFFE ID (the ID of its X.509-SVID,
  which is the ``sub`` of its tokens), every cached token is dropped and ``/v1/token`` answers 403
  ``access_denied`` "this workload is quarantined" (:class:`~broker.sidecar.errors.WorkloadQuarantinedError`)
  until the quarantine is released or its ``until`` passes. The token service refuses the workload's exchanges
  meanwhile anyway; the sidecar stops handing out what it already holds.
* **revoked tokens**: every cached token the log cuts off (its ``jti``, its signing ``kid``, or a quarantine cutoff
  covering the time it was issued) is dropped, so the next request gets a fresh exchange instead of a token every
  resource server that follows the feed refuses.

* **API-key exceptions** (issue 12): every :class:`FeedListener` (the egress proxy's grant cache,
  :class:`~broker.sidecar.egress.grants.GrantCache`) hears of each change with the index and the workload's
  quarantine (until when), and drops the secrets of withdrawn exceptions at once (all of them while quarantined).

A stale feed changes nothing here: the sidecar keeps serving what it holds (resource servers decide what a stale
feed means for them), and on reconnecting it gets what it missed, or a snapshot.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from broker.events.revocations import LogEntry, RevocationIndex
from broker.identity.errors import IdentityError
from broker.identity.source import X509Source
from broker.sidecar.cache import CachedToken, TokenCache
from broker.verify.feed import RevocationFeedFollower

__all__ = ["FeedListener", "RevocationWatcher"]

log = logging.getLogger(__name__)


class FeedListener(Protocol):
    """Something else the feed cuts off (held API-key secrets): told after every entry or snapshot."""

    def feed_changed(self, index: RevocationIndex, *, quarantined_until: float | None) -> None:
        """``quarantined_until``: None if the workload is not quarantined, else when it ends (``inf``: released)."""


class RevocationWatcher:
    """Applies the feed followed by ``follower`` to ``cache`` for the workload whose SVIDs ``source`` holds."""

    def __init__(
        self,
        follower: RevocationFeedFollower,
        cache: TokenCache,
        source: X509Source,
        *,
        clock: Callable[[], float] = time.time,
        listeners: Iterable[FeedListener] = (),
    ) -> None:
        self.follower = follower
        self.listeners = list(listeners)
        self._cache = cache
        self._source = source
        self._clock = clock
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self._unsubscribe = self.follower.subscribe(self.changed)
        self.follower.start()

    async def aclose(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self.follower.aclose()

    @property
    def quarantined(self) -> bool:
        return self._cache.suspended

    def changed(self, entries: Sequence[LogEntry], snapshot: bool) -> None:
        """After each entry or snapshot: apply the workload's quarantine state, drop revoked tokens."""
        try:
            subject = str(self._source.x509_svid().spiffe_id)
        except IdentityError:
            return  # no SVID yet: no tokens either; the next entry (or snapshot on reconnect) is applied then
        index, now = self.follower.index, datetime.fromtimestamp(self._clock(), UTC)
        quarantine = index.quarantine_of(subject, now)
        if quarantine is not None:
            until = math.inf if quarantine.until is None else quarantine.until.timestamp()
            if not self._cache.suspended:
                log.warning("this workload (%s) is quarantined (%s): its cached tokens are dropped and none is "
                            "served until the quarantine is released", subject, quarantine.pattern)  # fmt: skip
            self._cache.suspend(until)
            self._tell(index, until)
            return
        if self._cache.suspended:
            log.warning("the quarantine of this workload (%s) was released: serving tokens again", subject)
        self._cache.resume()
        self._tell(index, None)

        def revoked(entry: CachedToken) -> bool:
            issued = datetime.fromtimestamp(entry.issued_at or 0.0, UTC)
            return index.refusal(jti=entry.jti, kid=entry.kid, subject=subject, issued_at=issued, now=now) is not None

        dropped = self._cache.drop_where(revoked)
        if dropped:
            log.info("dropped %d cached token(s) the revocation feed revoked", dropped)

    def _tell(self, index: RevocationIndex, quarantined_until: float | None) -> None:
        for listener in self.listeners:
            listener.feed_changed(index, quarantined_until=quarantined_until)
