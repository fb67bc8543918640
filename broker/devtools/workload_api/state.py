"""What the Workload API serves right now: entries, their SVIDs, the bundles, and a change signal.

Every stream handler waits on :meth:`WorkloadState.changed` and, when it fires, rebuilds its *whole* response
(SPIFFE Workload API §4.3-§4.4: each message carries the complete current state, never a delta). Runs on the
server's event loop only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from broker.devtools.devca import DevCA
from broker.devtools.workload_api.attestation import PeerCredentials, matching_entries
from broker.devtools.workload_api.entries import EntryStore, RegistrationEntry
from broker.devtools.workload_api.svids import SvidCache
from broker.identity.spiffeid import TrustDomain
from broker.identity.svid import X509Svid

__all__ = ["WorkloadState"]

log = logging.getLogger(__name__)


class WorkloadState:
    """Registration entries (from an :class:`EntryStore`), their X.509-SVIDs and the trust bundles."""

    def __init__(
        self, *, ca: DevCA, entries: EntryStore, default_x509_ttl: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.ca = ca
        self._store = entries
        self._cache = SvidCache(ca, default_ttl=default_x509_ttl, clock=clock)
        self._entries: tuple[RegistrationEntry, ...] = ()
        self._foreign_warned: set[RegistrationEntry] = set()
        self._changed: asyncio.Event | None = None

    @property
    def trust_domain(self) -> TrustDomain:
        return self.ca.trust_domain

    def refresh(self, *, force_rotate: bool = False) -> bool:
        """Re-read entries, issue/rotate SVIDs; wake every stream if anything changed. True if it did."""
        entries = self._read_entries()
        changed = entries != self._entries
        self._entries = entries
        changed = self._cache.sync(entries) or changed
        if force_rotate:
            self._cache.rotate_all()
            changed = True
        else:
            changed = self._cache.rotate_due() or changed
        if changed:
            self._publish()
        return changed

    def matching(self, caller: PeerCredentials) -> list[RegistrationEntry]:
        return matching_entries(self._entries, caller)

    def x509_svid(self, entry: RegistrationEntry) -> X509Svid:
        return self._cache.get(entry)

    def next_rotation(self) -> float | None:
        return self._cache.next_rotation()

    def changed(self) -> asyncio.Event:
        """An event set at the next change; take it *before* building a response so no change is missed."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _publish(self) -> None:
        if self._changed is not None:
            self._changed.set()
        self._changed = None

    def _read_entries(self) -> tuple[RegistrationEntry, ...]:
        try:
            entries = self._store.entries()
        except Exception:  # a broken store serves nobody (fail closed); the reason goes to the log
            log.exception("reading registration entries failed; serving no entries")
            return ()
        usable = []
        for entry in entries:
            if entry.spiffe_id.is_member_of(self.trust_domain):
                usable.append(entry)
            elif entry not in self._foreign_warned:
                self._foreign_warned.add(entry)
                log.warning("ignoring entry %s: not in trust domain %s", entry.spiffe_id, self.trust_domain)
        return tuple(usable)
