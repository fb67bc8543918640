"""``GET /v1/revocations``: the revocation feed, one authenticated Server-Sent Events stream per follower (issue 10).

Advertised in the RFC 8414 metadata as ``spiffe_broker_revocation_feed_endpoint`` (§2 allows extension members).
The wire form (``hello``, ``snapshot``, one event per log entry, heartbeat comments) is in
:mod:`broker.events.feed`; the fan-out (one store read and one serialisation per entry, the same bytes to every
follower) in :mod:`broker.server.feed_fanout`. A request is answered in this order, each refusal an RFC 6749 §5.2
JSON error before the stream starts:

1. **Authenticate**: an X.509-SVID on the TLS connection, verified against the bundle of the trust domain its
   SPIFFE ID names (RFC 8705 §2.1 ``tls_client_auth``, as at ``/token``): else ``invalid_client`` (401). Never
   unauthenticated: the feed names quarantined workloads.
2. **Authorise**: the SPIFFE ID matches ``[feed] spiffe_ids`` (IDs or ``spiffe://td/path/*`` prefixes); an empty
   list (the default) admits any SVID the server authenticates, of its own or a federated trust domain, since
   every resource server that verifies the broker's tokens should follow the feed: else ``access_denied`` (403).
3. **Read the position**: ``Last-Event-ID`` (WHATWG HTML §9.2.4) or ``?after=N``, a decimal ``seq`` (both: they
   must agree), and ``?feed_id=``: else ``invalid_request`` (400).
4. **Admit**: at most ``[feed] max_followers`` per replica, and ``max_followers_per_id`` of one SPIFFE ID (so one
   compromised workload cannot take every place and leave verifiers stale): else ``temporarily_unavailable`` (503) with
   ``Retry-After`` (RFC 9110 §10.2.3); the follower's own jittered backoff spreads the retries.
5. **Place**: no position (0), one below the log's horizon, or a ``feed_id`` other than the log's: a snapshot
   first. A position above the log's head is checked against the store (this replica may lag another by the
   change feed's latency): still above it, ``invalid_request`` (400, "a sequence number from the future").
6. **Stream**: ``200 text/event-stream``, ``hello``, the snapshot or the entries after the position, then every
   new entry as it is committed, and a heartbeat comment every ``[feed] heartbeat`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from broker.config import FeedSettings
from broker.errors import (
    AccessDeniedError,
    ConfigError,
    InvalidClientError,
    InvalidRequestError,
    TemporarilyUnavailableError,
)
from broker.events.change import ChangeFeed
from broker.events.feed import CONTENT_TYPE, FEED_ID, FEED_PATH, METADATA_KEY, SEQ, entry_event
from broker.events.revocations import SubjectPattern, subject_keys
from broker.identity.bundle import X509BundleSet
from broker.identity.errors import IdentityError
from broker.server.feed_fanout import Broadcaster, Follower
from broker.server.handlers import advertise
from broker.server.state import CONFIG, METADATA_MEMBERS
from broker.tokens.client_auth import RequestContext
from broker.tokens.client_auth.mtls import TlsClientAuth
from broker.tokens.revocation import LogAhead, LogBehind, RevocationLogStore

__all__ = ["FEED", "RevocationFeed", "add_revocation_feed", "follow", "read_position"]

log = logging.getLogger(__name__)

REACH_TIMEOUT = 2.0  # seconds to wait for this replica to catch up with a follower's position
MAX_BACKLOG = 1_000  # entries read for one follower behind the ring; further behind, the shared cached snapshot
# (one rendering per head for every follower, where per-follower reads would cost a store read and a rendering each)
_STREAM_HEADERS = {"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store", "X-Accel-Buffering": "no"}


@dataclass(frozen=True, slots=True)
class _Start:
    """Where a follower starts: the bytes it gets first, and the ``seq`` they bring it to."""

    initial: bytes
    seq: int


class RevocationFeed:
    """The feed's HTTP side: who may follow, how many, and where each one starts."""

    def __init__(
        self,
        broadcaster: Broadcaster,
        log_store: RevocationLogStore,
        *,
        bundles: Callable[[], X509BundleSet],
        settings: FeedSettings,
    ) -> None:
        self.broadcaster = broadcaster
        self._log = log_store
        self._client_auth = TlsClientAuth(bundles)
        self._allowed = _patterns(settings.spiffe_ids)
        self._settings = settings
        self._admitted = 0
        self._by_id: dict[str, int] = {}

    def authenticate(self, request: web.Request) -> tuple[str, float]:
        """Steps 1 and 2: the follower's SPIFFE ID and its SVID's expiry, or ``invalid_client`` / ``access_denied``."""
        transport = request.transport
        tls = transport.get_extra_info("ssl_object") if transport is not None else None
        context = RequestContext(tls=tls if isinstance(tls, ssl.SSLObject | ssl.SSLSocket) else None)
        client = self._client_auth.authenticate(context)
        spiffe_id = str(client.spiffe_id)
        if self._allowed and not any(key in self._allowed for key in subject_keys(spiffe_id)):
            raise AccessDeniedError(f"{spiffe_id} may not follow the revocation feed (see [feed] spiffe_ids)")
        leaf = client.leaf
        if leaf is None:  # tls_client_auth always has one
            raise InvalidClientError("mutual TLS with an X.509-SVID is required")
        return spiffe_id, leaf.not_valid_after_utc.timestamp()

    def admit(self, spiffe_id: str) -> None:
        """Step 4: a place for one more follower, within ``max_followers`` for the replica and
        ``max_followers_per_id`` for one SPIFFE ID (one compromised workload cannot take every place); else 503."""
        per_id = self._settings.max_followers_per_id
        if self._admitted >= self._settings.max_followers:
            raise _unavailable("this replica follows its maximum of followers; retry later", self._settings)
        if per_id and self._by_id.get(spiffe_id, 0) >= per_id:
            raise _unavailable("this SPIFFE ID follows the feed its maximum number of times here", self._settings)
        self._admitted += 1
        self._by_id[spiffe_id] = self._by_id.get(spiffe_id, 0) + 1

    def leave(self, spiffe_id: str) -> None:
        self._admitted -= 1
        left = self._by_id.get(spiffe_id, 0) - 1
        if left > 0:
            self._by_id[spiffe_id] = left
        else:
            self._by_id.pop(spiffe_id, None)

    async def place(self, after: int, feed_id: str | None) -> _Start:
        """Step 5: the first bytes for a follower at ``after`` of ``feed_id`` (None: it did not say)."""
        b = self.broadcaster
        if after == 0 or after < b.horizon or (feed_id is not None and feed_id != b.feed_id):
            return await self._from_snapshot()
        if after > b.head:
            await self._check_not_ahead(after)
        if b.covers(after):
            return _Start(b.hello().raw, after)
        return await self._from_log(after)

    async def _from_snapshot(self) -> _Start:
        b = self.broadcaster
        snapshot = await b.snapshot()
        if snapshot.feed_id != b.feed_id or not await b.reach(snapshot.head, REACH_TIMEOUT):
            asyncio.get_running_loop().create_task(b.catch_up())  # a reset or a lag this replica will see soon
            raise _unavailable("the revocation log is changing on this replica; retry", self._settings)
        return _Start(b.hello().raw + snapshot.frame.raw, snapshot.head)

    async def _check_not_ahead(self, after: int) -> None:
        try:
            await self._log.read(after, limit=1)
        except LogAhead:
            raise InvalidRequestError(f"Last-Event-ID {after} is beyond the revocation log's head") from None
        except LogBehind:
            return  # pruned meanwhile: place() would have sent a snapshot; the broadcaster's read will reset
        if not await self.broadcaster.reach(after, REACH_TIMEOUT):
            raise _unavailable("this replica has not caught up with the revocation log yet; retry", self._settings)

    async def _from_log(self, after: int) -> _Start:
        """Behind the ring but not the horizon: the entries after ``after`` from the store (rare: the ring holds
        ``[feed] ring_size`` entries and is filled at start)."""
        b = self.broadcaster
        if b.head - after > MAX_BACKLOG:
            return await self._from_snapshot()
        try:
            page = await self._log.read(after, limit=b.head - after)
        except LogBehind:
            return await self._from_snapshot()
        except LogAhead:
            raise InvalidRequestError(f"Last-Event-ID {after} is beyond the revocation log's head") from None
        if page.feed_id != b.feed_id or len(page.entries) != b.head - after:
            return await self._from_snapshot()
        frames = b"".join(entry_event(entry) for entry in page.entries)
        return _Start(b.hello().raw + frames, b.head)


def _unavailable(description: str, settings: FeedSettings) -> TemporarilyUnavailableError:
    error = TemporarilyUnavailableError(description)
    error.headers["Retry-After"] = str(settings.retry_after)
    return error


def _patterns(values: list[str]) -> frozenset[str]:
    keys = set()
    for value in values:
        try:
            keys.add(SubjectPattern.parse(value, all_of_trust_domain=True).key)
        except (IdentityError, ValueError):
            raise ConfigError(f"feed.spiffe_ids: {value!r} is not a SPIFFE ID or spiffe://td/path/* prefix") from None
    return frozenset(keys)


def _single(name: str, values: list[str]) -> str | None:
    if len(values) > 1:
        raise InvalidRequestError(f"{name} must not be repeated")
    return values[0] if values else None


def read_position(request: web.Request) -> tuple[int, str | None]:
    """Step 3: ``(seq, feed_id)`` from ``Last-Event-ID`` / ``?after=`` and ``?feed_id=``."""
    query = request.query
    after = _single("after", query.getall("after", []))
    header = _single("Last-Event-ID", request.headers.getall("Last-Event-ID", [])) or None
    feed_id = _single("feed_id", query.getall("feed_id", []))
    for name, value in (("after", after), ("Last-Event-ID", header)):
        if value is not None and not SEQ.fullmatch(value):
            raise InvalidRequestError(f"{name} is not a sequence number (a decimal integer)")
    if after is not None and header is not None and after != header:
        raise InvalidRequestError("after and Last-Event-ID disagree")
    if feed_id is not None and not FEED_ID.fullmatch(feed_id):
        raise InvalidRequestError("feed_id is malformed")
    position = header if header is not None else after
    return (int(position) if position is not None else 0), feed_id


FEED = web.AppKey("revocation_feed", RevocationFeed)


async def follow(request: web.Request) -> web.StreamResponse:
    """``GET /v1/revocations``: see the module docstring for the order of the checks."""
    feed = request.app[FEED]
    who, not_after = feed.authenticate(request)
    after, feed_id = read_position(request)
    feed.admit(who)
    try:
        start = await feed.place(after, feed_id)
        response = web.StreamResponse(headers=_STREAM_HEADERS)
        await response.prepare(request)
        chunked = request.version >= (1, 1)
        await response.write(start.initial)
        transport = request.transport
        if transport is None or transport.is_closing():
            return response
        done = asyncio.get_running_loop().create_future()
        follower = Follower(transport, chunked, done, who, not_after)
        if not feed.broadcaster.attach(follower, start.seq):
            return response  # it fell behind the ring while its first bytes were sent: the stream ends, it resumes
        await done
    finally:
        feed.leave(who)
    return response


def add_revocation_feed(
    app: web.Application,
    *,
    log_store: RevocationLogStore,
    changes: ChangeFeed,
    bundles: Callable[[], X509BundleSet],
    settings: FeedSettings,
) -> RevocationFeed:
    """Mount ``GET /v1/revocations`` on ``app`` (the token service's TLS app, before it starts); the broadcaster
    starts with the app and stops (releasing every follower) when it shuts down."""
    broadcaster = Broadcaster(
        log_store, changes, ring_size=settings.ring_size, max_buffer=settings.max_buffer, heartbeat=settings.heartbeat
    )
    feed = RevocationFeed(broadcaster, log_store, bundles=bundles, settings=settings)
    app[FEED] = feed
    app.router.add_get(FEED_PATH, follow, allow_head=False)  # HEAD: 405, never a stream (RFC 9110 §9.3.2)
    if METADATA_MEMBERS in app:  # the token service's app: advertise the feed (RFC 8414 §2 extension member)
        advertise(app, {METADATA_KEY: f"{app[CONFIG].issuer}{FEED_PATH}"})

    async def running(app: web.Application) -> AsyncIterator[None]:
        await broadcaster.start()
        yield
        await broadcaster.stop()

    async def release_followers(app: web.Application) -> None:
        broadcaster.close_all()  # before aiohttp waits for handlers: each follower's handler returns at once

    app.cleanup_ctx.append(running)
    app.on_shutdown.append(release_followers)
    return feed
