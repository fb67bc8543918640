"""X.509-SVIDs per registration entry, re-issued at half-life as SPIRE's agent does.

SPIRE's agent renews an SVID once half of its lifetime has passed, so a workload always holds a certificate with
at least half its TTL left and a push that is late by a few seconds still arrives before expiry. The lifetime is
measured from the moment of issue, not from ``notBefore``: the dev CA backdates ``notBefore`` by a few seconds
for clock skew, which would otherwise make a very short TTL rotate continuously.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from broker.devtools.devca import DevCA
from broker.devtools.workload_api.entries import RegistrationEntry
from broker.identity.svid import X509Svid

__all__ = ["IssuedSvid", "SvidCache"]


@dataclass(frozen=True)
class IssuedSvid:
    """An X.509-SVID with the time (epoch seconds) it was issued."""

    svid: X509Svid
    issued_at: float

    @property
    def rotate_at(self) -> float:
        """Half-way between issue and ``notAfter``."""
        expires = self.svid.not_after.timestamp()
        return self.issued_at + (expires - self.issued_at) / 2


class SvidCache:
    """One current X.509-SVID per registration entry; every caller matching the entry gets the same one."""

    def __init__(self, ca: DevCA, *, default_ttl: float, clock: Callable[[], float] = time.time) -> None:
        if not default_ttl > 0:
            raise ValueError("default_ttl must be positive")
        self._ca = ca
        self._default_ttl = default_ttl
        self._clock = clock
        self._issued: dict[RegistrationEntry, IssuedSvid] = {}

    def sync(self, entries: Iterable[RegistrationEntry]) -> bool:
        """Issue for new entries and forget removed ones; True if anything changed."""
        wanted = set(entries)
        removed = [entry for entry in self._issued if entry not in wanted]
        for entry in removed:
            del self._issued[entry]
        added = [entry for entry in wanted if entry not in self._issued]
        for entry in added:
            self._issue(entry)
        return bool(removed or added)

    def rotate_due(self) -> bool:
        """Re-issue every SVID past its half-life; True if any was."""
        now = self._clock()
        due = [entry for entry, issued in self._issued.items() if now >= issued.rotate_at]
        for entry in due:
            self._issue(entry)
        return bool(due)

    def rotate_all(self) -> None:
        for entry in list(self._issued):
            self._issue(entry)

    def get(self, entry: RegistrationEntry) -> X509Svid:
        """The entry's current SVID (issued now if the entry is not cached yet)."""
        issued = self._issued.get(entry)
        if issued is None:
            issued = self._issue(entry)
        return issued.svid

    def next_rotation(self) -> float | None:
        """The earliest ``rotate_at`` of the cached SVIDs, or None when there are none."""
        return min((issued.rotate_at for issued in self._issued.values()), default=None)

    def _issue(self, entry: RegistrationEntry) -> IssuedSvid:
        ttl = entry.x509_svid_ttl if entry.x509_svid_ttl is not None else self._default_ttl
        issued_at = self._clock()
        svid = self._ca.issue_x509_svid(entry.spiffe_id, ttl=ttl, dns_names=entry.dns_names)
        issued = IssuedSvid(svid, issued_at)
        self._issued[entry] = issued
        return issued
