"""A bounded memo of JWT-SVIDs that passed validation, so a JWT-SVID presented again is not re-verified.

SPIRE's agent hands a workload the same JWT-SVID until half its lifetime has passed, so the token service sees
each one many times. An entry is added only after full validation (JWT-SVID §3-§4) and is used again only while
(a) the token is unexpired (``exp`` plus leeway, checked on every hit) and (b) the JWT bundle of its trust domain
is still equal to the one it was validated against (a bundle change, such as a removed key, re-validates).
Entries are keyed by SHA-256 of the token, so memory stays bounded whatever the token sizes. The checks that
involve the request (``sub`` equals the client certificate's SPIFFE ID) are not cached.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from broker.identity.bundle import JwtBundle, JwtBundleSet
from broker.identity.svid import JwtSvid

__all__ = ["ValidatedSvidCache"]


@dataclass(frozen=True)
class _Entry:
    svid: JwtSvid
    bundle: JwtBundle | None


class ValidatedSvidCache:
    """At most ``max_entries`` validated JWT-SVIDs, least recently used evicted first."""

    def __init__(self, *, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._max_entries = max_entries
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(token: str, audience: str) -> bytes:
        return hashlib.sha256(audience.encode() + b"\x00" + token.encode()).digest()

    def get(self, key: bytes, bundles: JwtBundleSet, *, now: float, leeway: float) -> JwtSvid | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if now >= entry.svid.expiry + leeway or bundles.get(entry.svid.spiffe_id.trust_domain) != entry.bundle:
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.svid

    def put(self, key: bytes, svid: JwtSvid, bundles: JwtBundleSet) -> None:
        self._entries[key] = _Entry(svid, bundles.get(svid.spiffe_id.trust_domain))
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
