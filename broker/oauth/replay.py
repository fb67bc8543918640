"""The replay cache: each ``jti`` of a client assertion (RFC 7523 §3 item 7) or a DPoP proof (RFC 9449 §11.1) is
accepted once while it could still be valid.

An entry is kept for the remaining validity of what it guards plus the clock leeway: the assertion's ``exp`` plus
leeway, a DPoP proof's ``iat`` plus the acceptance window plus leeway. Past that the token carrying the ``jti``
is refused on its times anyway, so the entry may go.

:meth:`ReplayCache.add` is an atomic insert-if-absent. It answers True only when the key was not recorded (or only
an expired entry was) and it is now durably recorded; False is a replay. When the cache cannot record (a bounded
cache is full of live entries, the store does not answer) it raises :class:`ReplayCacheUnavailable`: the caller
refuses the request with ``temporarily_unavailable`` and never accepts a ``jti`` it could not record (fail closed).

Keys are :func:`replay_key` digests: the kind of credential, the party that minted it (the client, the DPoP key's
thumbprint) and the ``jti``. A ``jti`` is chosen by the client, so its length is bounded before it gets here and
the digest keeps the stored key a fixed 64 characters whatever the client sent.

:class:`MemoryReplayCache` is the bounded in-memory form (one process; a resource server checking DPoP proofs
uses it too, which is why this lives in :mod:`broker.oauth`); the shared forms live in
:mod:`broker.store` (SQLite for one node, PostgreSQL across replicas) and pass the same contract tests.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from broker import tracing
from broker.errors import StoreUnavailableError

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "MAX_JTI_LENGTH",
    "CountingReplayCache",
    "MemoryReplayCache",
    "ReplayCache",
    "ReplayCacheUnavailable",
    "ReplayKind",
    "check_entry",
    "check_now",
    "replay_key",
]

DEFAULT_MAX_ENTRIES = 1_000_000
MAX_JTI_LENGTH = 256  # a jti longer than this is refused before it reaches the cache
_KEY = re.compile(r"[0-9a-f]{64}")


class ReplayKind(StrEnum):
    """What a ``jti`` came in: each kind is its own namespace."""

    CLIENT_ASSERTION = "client-assertion"  # RFC 7523 jwt-bearer (private_key_jwt)
    JWT_SVID = "jwt-svid"  # draft-ietf-oauth-spiffe-client-auth jwt-spiffe
    DPOP_PROOF = "dpop-proof"  # RFC 9449 §11.1


def replay_key(kind: ReplayKind, minted_by: str, jti: str) -> str:
    """The cache key of ``jti`` minted by ``minted_by`` (a client_id, a SPIFFE ID, a JWK thumbprint): 64 hex chars.

    Each part is length-prefixed, so no two different triples give the same input to the hash."""
    digest = hashlib.sha256()
    for part in (kind.value, minted_by, jti):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)
    return digest.hexdigest()


def check_now(now: datetime) -> datetime:
    """``now`` if it is timezone-aware; ValueError otherwise. The same rule and words as
    :func:`broker.tokens.keystore.check_instant`, restated here because :mod:`broker.oauth` sits below
    :mod:`broker.tokens` in the layers (``lint-imports``)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("store timestamps must be timezone-aware")
    return now


def check_entry(key: str, now: datetime, expires_at: datetime) -> None:
    """Refuse what no form of the cache records (ValueError), before it is written: a key that is not a
    :func:`replay_key` digest (64 lowercase hex characters), a naive time, or ``expires_at <= now`` (an entry that
    guards nothing; RFC 7523 §3 item 7 and RFC 9449 §11.1 keep a ``jti`` only while it could still be accepted).
    The key is never quoted: it is derived from client input."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError("a replay key is 64 lowercase hex characters (replay_key)")
    check_now(now)
    check_now(expires_at)
    if expires_at <= now:
        raise ValueError("expires_at must be after now")


class ReplayCacheUnavailable(StoreUnavailableError):
    """The cache could not record a key (full of live entries, or its store did not answer): refuse the request
    with ``temporarily_unavailable`` (RFC 6749 §5.2 has no better code; 503)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"replay cache unavailable: {reason}")


class ReplayCache(Protocol):
    async def add(self, key: str, *, now: datetime, expires_at: datetime) -> bool:
        """Record ``key`` until ``expires_at``; True if it was absent (or its entry had expired at ``now``), False
        if a live entry holds it (a replay). Atomic across every process sharing the cache. Raises
        :class:`ReplayCacheUnavailable` when it cannot record; ValueError (:func:`check_entry`) for a key that is
        not a :func:`replay_key` digest, a naive time, or ``expires_at <= now``."""
        ...

    async def prune(self, now: datetime) -> int:
        """Drop the entries expired at ``now`` (timezone-aware); how many went."""
        ...


class CountingReplayCache:
    """``inner`` with a count of the replays it refused (:attr:`refusals`, read by the metrics at scrape time).
    One per kind of credential, so each kind is counted apart over one shared cache."""

    def __init__(self, inner: ReplayCache) -> None:
        self.inner = inner
        self.refusals = 0

    async def add(self, key: str, *, now: datetime, expires_at: datetime) -> bool:
        with tracing.span("spiffe-broker.store.replay_add"):
            fresh = await self.inner.add(key, now=now, expires_at=expires_at)
        if not fresh:
            self.refusals += 1
        return fresh

    async def prune(self, now: datetime) -> int:
        return await self.inner.prune(now)


class MemoryReplayCache:
    """A bounded in-process cache, evicting by expiry: when full, expired entries go first; if every entry is
    still live, :meth:`add` raises :class:`ReplayCacheUnavailable` rather than forget one."""

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._expiry: dict[str, datetime] = {}
        self._heap: list[tuple[datetime, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    async def add(self, key: str, *, now: datetime, expires_at: datetime) -> bool:
        check_entry(key, now, expires_at)
        held = self._expiry.get(key)
        if held is not None and held > now:
            return False
        if held is None and len(self._expiry) >= self._max:
            self._evict(now)
            if len(self._expiry) >= self._max:
                raise ReplayCacheUnavailable("full of unexpired entries")
        self._expiry[key] = expires_at
        heapq.heappush(self._heap, (expires_at, key))
        return True

    async def prune(self, now: datetime) -> int:
        return self._evict(check_now(now))

    def _evict(self, now: datetime) -> int:
        dropped = 0
        while self._heap and self._heap[0][0] <= now:
            expires_at, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == expires_at:
                del self._expiry[key]
                dropped += 1
        if len(self._heap) > 2 * len(self._expiry) + 64:  # stale heap items of re-added keys
            self._heap = [(at, key) for key, at in self._expiry.items()]
            heapq.heapify(self._heap)
        return dropped
