"""The sidecar's token cache: per (audience, scope), single-flight, refreshed ahead of expiry.

* Hot path: :meth:`TokenCache.lookup` is one dict lookup and one clock read; the response body is serialised once
  per token (only the trailing ``expires_in`` is filled in per request).
* Single flight: concurrent callers for a key without a usable token await one shared exchange
  (an ``asyncio.Task``, shielded so a disconnecting caller does not cancel it for the others).
* Refresh ahead: past ``refresh_at`` (80 % of the lifetime, or 30 s before expiry, never before half of it) the
  current token is still served while one background exchange replaces it. If the token service is down the
  cached token keeps being served until ``min_remaining`` seconds before it expires; failed background refreshes
  back off exponentially with jitter.
* Binding: each token is bound to the X.509-SVID it was obtained with: to its certificate (RFC 8705 §3,
  ``cnf.x5t#S256``) or, with ``token_binding = "dpop"``, to its key (RFC 9449 §6.1, ``cnf.jkt``). When the source
  reports a new SVID, every entry not bound to the new certificate or the new key is dropped, and a token that
  comes back bound to a rotated certificate or key is exchanged again.
* Revocation (:mod:`broker.sidecar.revocations`): a token the revocation feed cuts off is dropped
  (:meth:`TokenCache.drop_where`; the next request gets a fresh exchange), and while the workload itself is
  quarantined (:meth:`TokenCache.suspend`) every cached token is dropped and none is served or fetched:
  :class:`~broker.sidecar.errors.WorkloadQuarantinedError`.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from broker._backoff import Backoff
from broker._logging import REQUEST_ID, new_request_id
from broker.identity.source import SubscribableX509Source, current_x5t
from broker.sidecar.dpop import current_jkt
from broker.sidecar.errors import TokenServiceUnavailableError, WorkloadQuarantinedError
from broker.sidecar.token_result import Exchanger, TokenResult

__all__ = ["CacheKey", "CacheStats", "CachedToken", "Clock", "TokenCache"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
CacheKey = tuple[str, str | None]


@dataclass(slots=True)
class CacheStats:
    """Counts the metrics read at scrape time (:mod:`broker.sidecar.metrics`); plain ints, no cost per request."""

    hits: int = 0  # answered from the cache
    misses: int = 0  # waited for an exchange that gave a token
    errors: int = 0  # no token: the exchange failed and nothing usable was cached, or the workload is quarantined
    exchanges_ok: int = 0
    exchanges_failed: int = 0
    svid_rotations: int = 0
    exchange_observers: list[Callable[[float], None]] = field(default_factory=list)  # seconds of each exchange


@dataclass(frozen=True, slots=True)
class CachedToken:
    """A cached access token and its pre-serialised ``/v1/token`` response body."""

    access_token: str = field(repr=False)
    expires_at: float
    refresh_at: float
    bound_x5t: str | None
    scope: str | None
    body_prefix: bytes = field(repr=False)
    jti: str | None = None
    kid: str | None = None
    issued_at: float | None = None
    bound_jkt: str | None = None

    @classmethod
    def from_result(
        cls, result: TokenResult, *, now: float, refresh_fraction: float, refresh_margin: float
    ) -> CachedToken:
        lifetime = float(result.expires_in)
        lead = max(lifetime * (1.0 - refresh_fraction), min(refresh_margin, lifetime / 2))
        document = {
            "access_token": result.access_token,
            "token_type": result.token_type,
            "issued_token_type": result.issued_token_type,
        }
        if result.scope is not None:  # RFC 6749 §5.1: an absent member is omitted, never null
            document["scope"] = result.scope
        prefix = json.dumps(document, separators=(",", ":"))[:-1] + ',"expires_in":'
        return cls(
            access_token=result.access_token,
            expires_at=now + lifetime,
            refresh_at=now + lifetime - lead,
            bound_x5t=result.bound_x5t,
            scope=result.scope,
            body_prefix=prefix.encode(),
            jti=result.jti,
            kid=result.kid,
            issued_at=result.issued_at,
            bound_jkt=result.bound_jkt,
        )

    def bound_to(self, x5t: str, jkt: str | None) -> bool:
        """Whether this token goes with the SVID whose certificate thumbprint is ``x5t`` and key thumbprint ``jkt``
        (an unbound token goes with none: it is exchanged anew after a rotation, as before)."""
        if self.bound_jkt is not None:
            return self.bound_jkt == jkt
        return self.bound_x5t == x5t

    def body(self, now: float) -> bytes:
        """The JSON response ``{access_token, token_type, issued_token_type[, scope], expires_in}``."""
        remaining = int(self.expires_at - now)
        return self.body_prefix + str(remaining if remaining > 0 else 0).encode() + b"}"


class TokenCache:
    """Tokens by (audience, scope) for one workload; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        exchanger: Exchanger,
        source: SubscribableX509Source,
        clock: Clock = time.time,
        refresh_fraction: float = 0.8,
        refresh_margin: float = 30.0,
        min_remaining: float = 1.0,
        failure_backoff: float = 1.0,
        max_failure_backoff: float = 30.0,
        max_entries: int = 1024,
    ) -> None:
        self._exchanger = exchanger
        self._source = source
        self._clock = clock
        self._refresh_fraction = refresh_fraction
        self._refresh_margin = refresh_margin
        self._min_remaining = min_remaining
        self._failure_backoff = Backoff(failure_backoff, max_failure_backoff)
        self._max_entries = max_entries
        self._entries: dict[CacheKey, CachedToken] = {}
        self._inflight: dict[CacheKey, asyncio.Task[CachedToken]] = {}
        self._failures: dict[CacheKey, tuple[int, float]] = {}  # key -> (consecutive failures, not before)
        self._x5t = current_x5t(self._source)
        self._jkt = current_jkt(self._source)
        self._unsubscribe: Callable[[], None] | None = source.subscribe(self._on_source_change)
        self._suspended_until = 0.0  # while the clock is below: quarantined, nothing served or fetched
        self.stats = CacheStats()

    async def get(self, key: CacheKey) -> CachedToken:
        """A usable token for ``key``: cached, cached while a refresh runs, or from a (shared) exchange.

        Counted once each (:class:`CacheStats`): a hit, a miss that got a token, or an error (no token: the
        exchange failed, or the workload is quarantined); a caller that went away is not counted."""
        try:
            entry, cached = await self._get(key)
        except Exception:
            self.stats.errors += 1
            raise
        if cached:
            self.stats.hits += 1
        else:
            self.stats.misses += 1
        return entry

    async def _get(self, key: CacheKey) -> tuple[CachedToken, bool]:
        self._check_not_suspended()
        entry = self._entries.get(key)
        if entry is not None:
            now = self._clock()
            if now < entry.refresh_at:
                return entry, True
            if now < entry.expires_at - self._min_remaining:
                self._refresh_in_background(key, now)
                return entry, True
            self._entries.pop(key, None)
        try:
            entry = await asyncio.shield(self._flight(key))
        except TokenServiceUnavailableError as exc:
            raise TokenServiceUnavailableError(f"{exc.description}, and no cached token") from None
        self._check_not_suspended()  # quarantined while the exchange ran
        return entry, False

    async def renew(self, key: CacheKey) -> CachedToken:
        """Like :meth:`get`, but past the refresh point wait for the refreshed token (token files use this).

        If the refresh fails while the current token is still usable, the current token is returned and the
        failure counts for the background backoff; with no usable token the failure is raised.
        """
        self._check_not_suspended()
        entry = self._entries.get(key)
        if entry is not None and self._clock() < entry.refresh_at:
            return entry
        try:
            fresh = await asyncio.shield(self._flight(key))
        except TokenServiceUnavailableError:
            if entry is not None and self._clock() < entry.expires_at - self._min_remaining:
                self._check_not_suspended()
                return entry
            raise
        self._check_not_suspended()
        return fresh

    def has_usable_token(self) -> bool:
        """True if some cached token can still be served (readiness: the sidecar can serve its app)."""
        deadline = self._clock() + self._min_remaining
        return any(entry.expires_at > deadline for entry in self._entries.values())

    def lookup(self, key: CacheKey) -> bytes | None:
        """The hot path: the pre-serialised response for ``key`` if its token needs no refresh, else None.

        A suspended cache holds no entries, so this needs no check of its own."""
        entry = self._entries.get(key)
        if entry is not None:
            now = self._clock()
            if now < entry.refresh_at:
                self.stats.hits += 1
                return entry.body(now)
        return None

    def expiries(self) -> list[tuple[str, float]]:
        """(audience, expires_at) of every cached token (the metrics' time-to-expiry gauges)."""
        return [(audience, entry.expires_at) for (audience, _), entry in self._entries.items()]

    def now(self) -> float:
        return self._clock()

    def suspend(self, until: float) -> None:
        """The workload is quarantined until ``until`` (``inf``: until released): drop every token, serve none."""
        self._suspended_until = until
        self._entries.clear()  # an exchange in flight is not kept either (_store), nor handed out (get, renew)

    def resume(self) -> None:
        """The quarantine was released (the tokens it dropped stay dropped: the next requests exchange anew)."""
        self._suspended_until = 0.0

    @property
    def suspended(self) -> bool:
        return self._clock() < self._suspended_until

    def drop_where(self, revoked: Callable[[CachedToken], bool]) -> int:
        """Drop every cached token for which ``revoked`` holds; how many went."""
        gone = [key for key, entry in self._entries.items() if revoked(entry)]
        for key in gone:
            del self._entries[key]
        return len(gone)

    def _check_not_suspended(self) -> None:
        if self._suspended_until and self._clock() < self._suspended_until:
            raise WorkloadQuarantinedError()

    def __len__(self) -> int:
        return len(self._entries)

    async def aclose(self) -> None:
        """Stop following the source and cancel exchanges in flight."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _flight(self, key: CacheKey, *, own_request_id: bool = False) -> asyncio.Task[CachedToken]:
        """The exchange in flight for ``key``, started if there is none. It logs under the request id of the
        request that started it, or (``own_request_id``: a background refresh) under a fresh one."""
        task = self._inflight.get(key)
        if task is None:
            context = contextvars.copy_context()
            if own_request_id:
                context.run(REQUEST_ID.set, new_request_id())
            task = asyncio.get_running_loop().create_task(self._fetch(key), context=context)
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._landed(key, done))
        return task

    def _refresh_in_background(self, key: CacheKey, now: float) -> None:
        if key in self._inflight:
            return
        failures = self._failures.get(key)
        if failures is not None and now < failures[1]:
            return
        self._flight(key, own_request_id=True)

    async def _exchange(self, audience: str, scope: str | None) -> TokenResult:
        """One exchange, timed for the metrics whether it gives a token or fails."""
        started = time.perf_counter()
        try:
            return await self._exchanger.exchange(audience, scope)
        finally:
            for observe in self.stats.exchange_observers:
                observe(time.perf_counter() - started)

    async def _fetch(self, key: CacheKey) -> CachedToken:
        audience, scope = key
        result = await self._exchange(audience, scope)
        rotated_x5t = result.bound_x5t is not None and result.bound_x5t != self._x5t
        if rotated_x5t or (result.bound_jkt is not None and result.bound_jkt != self._jkt):
            result = await self._exchange(audience, scope)  # the SVID rotated meanwhile
        now = self._clock()
        entry = CachedToken.from_result(
            result, now=now, refresh_fraction=self._refresh_fraction, refresh_margin=self._refresh_margin
        )
        self._store(key, entry, now)
        return entry

    def _store(self, key: CacheKey, entry: CachedToken, now: float) -> None:
        if now < self._suspended_until:
            return  # quarantined while the exchange ran
        if key not in self._entries and len(self._entries) >= self._max_entries:
            for stale in [k for k, e in self._entries.items() if e.expires_at <= now]:
                del self._entries[stale]
            if len(self._entries) >= self._max_entries:
                del self._entries[min(self._entries, key=lambda k: self._entries[k].expires_at)]
        self._entries[key] = entry

    def _landed(self, key: CacheKey, task: asyncio.Task[CachedToken]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if task.cancelled():
            return
        if task.exception() is None:
            self.stats.exchanges_ok += 1
            self._failures.pop(key, None)
            return
        self.stats.exchanges_failed += 1
        count = self._failures.get(key, (0, 0.0))[0]
        delay = self._failure_backoff.delay(count)
        self._failures[key] = (count + 1, self._clock() + delay)

    def _on_source_change(self) -> None:
        x5t = current_x5t(self._source)
        if x5t is None or x5t == self._x5t:
            return
        self._x5t, self._jkt = x5t, current_jkt(self._source)
        self.stats.svid_rotations += 1
        stale = [key for key, entry in self._entries.items() if not entry.bound_to(x5t, self._jkt)]
        for key in stale:
            del self._entries[key]
        if stale:
            log.info("X.509-SVID rotated: dropped %d cached token(s) bound to the previous SVID", len(stale))
