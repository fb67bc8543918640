"""A registered client's public keys, for verifying its ``private_key_jwt`` assertions (RFC 7523 §2.2, §3).

:meth:`ClientKeyFetcher.keys` answers from the registration (:class:`~broker.tokens.clients.RegisteredClient`):

* an inline ``jwks`` (RFC 7591 §2) is returned as it is: the registry accepted public keys only;
* a ``jwks_uri`` (RFC 7591 §2) is fetched under the server-side request guards of :mod:`broker.server.jwks_fetch`
  (https only, public addresses only unless allowed, the vetted address pinned, no redirects, a size and a time
  limit, a JWK Set of public keys), and cached per client:

  - for the response's ``Cache-Control: max-age`` (RFC 9111 §5.2.2.1), bounded to ``[min_ttl, max_ttl]``;
    ``default_ttl`` without one, ``min_ttl`` for ``no-store``/``no-cache`` (the guard against hammering wins);
  - when a refresh fails, the last good set is served for up to ``max_stale`` seconds past its expiry, and the
    URI is not asked again before ``refetch_interval`` (a down key server is not hammered either);
  - an assertion naming a ``kid`` the cached set lacks (the client rotated its keys) triggers an early refetch,
    at most one per client per ``refetch_interval``: made-up ``kid`` values cannot turn the server into a load
    generator against the URI (the rule :mod:`broker.verify.jwks` follows for the broker's own keys);
  - concurrent callers of one client share one fetch (shielded, so a caller that goes away does not cancel it);
  - a changed ``jwks_uri`` (the client re-registered) starts afresh.

Failures are :class:`~broker.server.jwks_fetch.ClientKeysRefusedError` (``invalid_client``) and
:class:`~broker.server.jwks_fetch.ClientKeysUnavailableError` (``temporarily_unavailable``), re-exported here;
their ``detail`` is logged here once per failed fetch, never a response body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.jose.jwk import jwks_keys
from broker.server.jwks_fetch import (
    ClientKeysError,
    ClientKeysRefusedError,
    ClientKeysUnavailableError,
    FetchedKeys,
    GuardedJwksFetch,
)
from broker.tokens.clients import RegisteredClient

__all__ = [
    "ClientKeyFetcher",
    "ClientKeysError",
    "ClientKeysRefusedError",
    "ClientKeysUnavailableError",
    "cache_lifetime",
]

log = logging.getLogger(__name__)

DEFAULT_TTL = 300.0
MIN_TTL = 60.0
MAX_TTL = 24 * 3600.0
MAX_STALE = 3600.0
REFETCH_INTERVAL = 30.0
Jwk = dict[str, Any]


def cache_lifetime(cache_control: str | None, *, default: float, floor: float, ceiling: float) -> float:
    """Seconds to keep a fetched set: ``max-age`` (RFC 9111 §5.2.2.1) within ``[floor, ceiling]``."""
    if cache_control is None:
        return default
    directives = [part.strip().lower() for part in cache_control.split(",")]
    if "no-store" in directives or "no-cache" in directives:
        return floor
    for directive in directives:
        name, _, value = directive.partition("=")
        value = value.strip().strip('"')
        if name.strip() == "max-age" and value.isascii() and value.isdigit():
            return min(max(float(int(value[:12])), floor), ceiling)
    return default


@dataclass(slots=True)
class _Entry:
    uri: str
    keys: tuple[Jwk, ...] | None = None  # the last good set
    expires_at: float = 0.0  # fresh until (the clock's time)
    attempted_at: float = float("-inf")  # the last fetch, good or not
    error: ClientKeysError | None = None  # the last fetch's failure, if it failed


class ClientKeyFetcher:
    """Keys per registered client (see the module docstring); one per service, shared by every request."""

    def __init__(
        self,
        fetch: GuardedJwksFetch | None = None,
        *,
        default_ttl: float = DEFAULT_TTL,
        min_ttl: float = MIN_TTL,
        max_ttl: float = MAX_TTL,
        max_stale: float = MAX_STALE,
        refetch_interval: float = REFETCH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch or GuardedJwksFetch()
        self._default_ttl, self._min_ttl, self._max_ttl = default_ttl, min_ttl, max_ttl
        self._max_stale, self._refetch_interval = max_stale, refetch_interval
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._fetching: dict[str, asyncio.Task[tuple[Jwk, ...]]] = {}

    async def keys(self, client: RegisteredClient, *, kid: str | None = None) -> list[Jwk]:
        """The client's public JWKs (do not modify them). ``kid``: the one its assertion names; if no cached key
        has it, the set is fetched again early (rate-limited). The caller picks the key and refuses if absent."""
        if client.jwks is not None:
            return list(jwks_keys(client.jwks) or [])
        entry, now = self._entry(client), self._clock()
        fetching = client.client_id in self._fetching
        if entry.keys is not None and now < entry.expires_at:
            if kid is None or _has_kid(entry.keys, kid) or not (fetching or self._may_fetch(entry, now)):
                return list(entry.keys)
        elif not (fetching or self._may_fetch(entry, now)):  # the last attempt failed lately: not again yet
            return list(self._stale_or_raise(entry, now))
        return list(await self._refresh(client))

    def forget(self, client_id: str) -> None:
        """Drop what is cached for a client (removed from the registry)."""
        self._entries.pop(client_id, None)

    def _entry(self, client: RegisteredClient) -> _Entry:
        uri = client.jwks_uri or ""
        entry = self._entries.get(client.client_id)
        if entry is None or entry.uri != uri:
            entry = self._entries[client.client_id] = _Entry(uri)
        return entry

    def _may_fetch(self, entry: _Entry, now: float) -> bool:
        return now - entry.attempted_at >= self._refetch_interval

    def _stale_or_raise(self, entry: _Entry, now: float) -> tuple[Jwk, ...]:
        if entry.keys is not None and now < entry.expires_at + self._max_stale:
            return entry.keys
        if entry.error is not None:
            raise entry.error
        raise ClientKeysUnavailableError("no usable keys from the jwks_uri, and it was asked too recently")

    async def _refresh(self, client: RegisteredClient) -> tuple[Jwk, ...]:
        task = self._fetching.get(client.client_id)
        if task is None:
            task = asyncio.ensure_future(self._fetch_into(client, self._entry(client)))
            self._fetching[client.client_id] = task
            task.add_done_callback(lambda done: self._fetched(client.client_id, done))
        return await asyncio.shield(task)

    def _fetched(self, client_id: str, task: asyncio.Task[tuple[Jwk, ...]]) -> None:
        self._fetching.pop(client_id, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: every caller may have gone away

    async def _fetch_into(self, client: RegisteredClient, entry: _Entry) -> tuple[Jwk, ...]:
        entry.attempted_at = self._clock()
        try:
            fetched: FetchedKeys = await self._fetch.fetch(client)
        except ClientKeysError as exc:
            log.warning("client %s: keys not refreshed from its jwks_uri: %s", client.client_id, exc.detail)
            entry.error = exc
            return self._stale_or_raise(entry, self._clock())
        ttl = cache_lifetime(fetched.cache_control, default=self._default_ttl, floor=self._min_ttl,
                             ceiling=self._max_ttl)  # fmt: skip
        entry.keys, entry.error, entry.expires_at = fetched.keys, None, self._clock() + ttl
        return fetched.keys


def _has_kid(keys: tuple[Jwk, ...], kid: str) -> bool:
    return any(key.get("kid") == kid for key in keys)
