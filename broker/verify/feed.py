"""Following the broker's revocation feed: the revoked tokens, keys and quarantined SPIFFE IDs, within a second.

The issuer's RFC 8414 metadata advertises the feed as ``spiffe_broker_revocation_feed_endpoint``; an issuer that
does not is not followed (and nothing is refused on its account). :class:`RevocationFeedFollower` keeps a
:class:`~broker.events.revocations.RevocationIndex` up to date from the Server-Sent Events stream
(:mod:`broker.events.feed`), over mTLS with the workload's X.509-SVID, the server authenticated by SPIFFE ID
before the request is sent. :class:`~broker.verify.verifier.AccessTokenVerifier` consults it for every token;
the sidecar uses it to drop its own revoked tokens.

Following, in the order the code runs it:

1. discover the endpoint in the metadata (again every ``rediscover_interval`` and after a 404);
2. ``GET`` it with ``Last-Event-ID: <seq>`` and ``?feed_id=`` of the log followed so far (nothing the first time);
3. read the stream strictly: the first event must be ``hello``; a ``snapshot`` replaces the index; each entry must
   be the next ``seq`` (an old one is ignored, a gap or anything malformed ends the connection); event types this
   version does not know are ignored; nothing the server sends can crash the follower;
4. reconnect after any failure with jittered exponential backoff (:mod:`broker._backoff`; a ``Retry-After`` is
   honoured as a floor), so ten thousand followers of a restarted replica do not come back in step. A ``400``
   (a position from the future: the broker's store was restored from a backup) makes it start over from a
   snapshot.

**Staleness.** The last contact is the last byte read from a synchronised stream (an entry, a snapshot or a
heartbeat comment, which the broker sends every 10 s by default). After ``stale_after`` seconds without one
(default 30 s), or before the first synchronisation, the follower is *stale*, and ``on_stale`` decides:

* ``"fail-closed"`` (the default): :meth:`RevocationFeedFollower.refusal` raises
  :class:`RevocationFeedStaleError`, which a resource server answers 503 ``temporarily_unavailable`` with
  ``Retry-After`` (RFC 9110 §15.6.4): the request may be fine, this server cannot tell now. Not 401
  ``invalid_token`` (RFC 6750 §3.1): nothing is wrong with the token, and a client told so would throw a good
  token away and ask the token service, possibly the very part that is down, for another. The cost: a broker
  outage or a partition between a resource server and every broker replica becomes an outage of that resource
  server after ``stale_after`` seconds.
* ``"accept"``: tokens keep being checked against the last known state only. Availability is kept through a broker
  outage; the cost is that a token revoked (or a workload quarantined) during the partition is accepted until the
  token expires (at most the policy's longest token lifetime).

The default is fail-closed because the feed exists to cut off a compromised workload in seconds, and a partition
is exactly when an attacker benefits from "accept". A deployment that values availability over that promise sets
``accept`` and keeps token lifetimes short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlsplit

from broker._backoff import Attempts, Backoff
from broker.errors import BrokerError, TemporarilyUnavailableError
from broker.events.feed import (
    CONTENT_TYPE,
    ENTRY_EVENTS,
    EVENT_HELLO,
    EVENT_SNAPSHOT,
    METADATA_KEY,
    FeedProtocolError,
    SseEvent,
    SseParser,
    parse_entry,
    parse_hello,
    parse_snapshot,
)
from broker.events.revocations import KeyRevoked, LogEntry, RevocationIndex
from broker.identity.source import X509ContextSource
from broker.identity.spiffetls.context import ServerIdMatcher
from broker.oauth.metadata import AuthorizationServerMetadata, MetadataError, check_issuer, metadata_url
from broker.verify.feed_transport import FeedOpener, FeedResponse, FeedRetry, MtlsFeedOpener, error_code, with_timeout
from broker.verify.jwks import FetchJson, HttpsJsonFetcher

__all__ = [
    "DEFAULT_BACKOFF",
    "OnStale",
    "RevocationFeedFollower",
    "RevocationFeedStaleError",
]

log = logging.getLogger(__name__)

OnStale = Literal["fail-closed", "accept"]
DEFAULT_BACKOFF = Backoff(initial=0.5, maximum=30.0, jitter="full")  # full jitter: spreads a reconnect storm
PRUNE_INTERVAL = 60.0
Listener = Callable[[Sequence[LogEntry], bool], None]


MAX_RETRY_AFTER = 60.0  # seconds: a Retry-After above this counts as this


class RevocationFeedStaleError(TemporarilyUnavailableError):
    """The revocation feed is stale and ``on_stale`` is ``fail-closed``: no token can be accepted now (503)."""

    def __init__(self) -> None:
        super().__init__("the revocation feed is stale: cannot tell whether the access token was revoked; retry")


class KeyRevocable(Protocol):
    """A JWKS cache that can forget a key before its ``max-age`` runs out."""

    def revoke(self, kid: str) -> None: ...


@dataclass
class _Session:
    """One connection's progress: the ``hello`` seen, and whether a snapshot must come before any entry."""

    sent_position: bool
    feed_id: str | None = None
    needs_snapshot: bool = False


class RevocationFeedFollower:
    """Follows the revocation feed of ``issuer`` (see the module docstring); :meth:`start` it, then :meth:`aclose`."""

    def __init__(
        self,
        *,
        issuer: str,
        fetch_json: FetchJson,
        open_feed: FeedOpener,
        stale_after: float = 30.0,
        on_stale: OnStale = "fail-closed",
        jwks: KeyRevocable | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        rediscover_interval: float = 300.0,
        max_event_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if on_stale not in ("fail-closed", "accept"):
            raise ValueError("on_stale is 'fail-closed' or 'accept'")
        self.issuer = check_issuer(issuer)
        self._fetch_json = fetch_json
        self._open = open_feed
        self.stale_after = stale_after
        self.on_stale = on_stale
        self._backoff = backoff
        self._rediscover_interval = rediscover_interval
        self._max_event_bytes = max_event_bytes
        self._clock = clock
        self._wall_clock = wall_clock
        self.index = RevocationIndex()
        self.feed_id: str | None = None
        self.head = 0  # the server's head as last seen
        self.advertised: bool | None = None  # None: not known yet
        self._endpoint: str | None = None
        self._discovered_at: float | None = None
        self._last_contact: float | None = None
        self._pruned_at = clock()
        self._start_over = False
        self._failing = False
        self._stale_reported = False
        self._synced = asyncio.Event()
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self.connects = 0  # connections opened (for tests and status)
        if jwks is not None:
            self.subscribe(_key_dropper(jwks))

    # -- what verifiers and the sidecar ask -------------------------------------------------------------------

    def stale(self) -> bool:
        """True if the feed is advertised (or not known yet) and nothing arrived for ``stale_after`` seconds."""
        if self.advertised is False:
            return False
        last = self._last_contact
        return last is None or self._clock() - last > self.stale_after

    def refusal(self, *, jti: str | None, kid: str | None, subject: str, issued_at: float) -> str | None:
        """Why a token is cut off (``revoked``, ``key_revoked``, ``quarantined``) or None; while stale and
        fail-closed, :class:`RevocationFeedStaleError` for every token."""
        if self.advertised is False:
            return None
        if self.stale():
            self._report_stale()
            if self.on_stale == "fail-closed":
                raise RevocationFeedStaleError()
        issued = datetime.fromtimestamp(issued_at, UTC)
        now = datetime.fromtimestamp(self._wall_clock(), UTC)
        return self.index.refusal(jti=jti, kid=kid, subject=subject, issued_at=issued, now=now)

    def _report_stale(self) -> None:
        if not self._stale_reported:
            self._stale_reported = True
            what = {"fail-closed": "every token is refused (503)", "accept": "only what it knew is refused"}
            log.warning("revocation feed of %s is stale (no contact for over %g s): %s until it is back",
                        self.issuer, self.stale_after, what[self.on_stale])  # fmt: skip

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(entries, snapshot)`` after each applied entry or snapshot; returns the unsubscriber."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def wait_synced(self, timeout: float) -> bool:
        """Wait until the follower holds the feed's state (or knows the issuer has no feed); False on timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._synced.wait()
        return self._synced.is_set()

    def status(self) -> dict[str, Any]:
        """For operators (the sidecar's ``/v1/status``): no token, no key."""
        last = self._last_contact
        return {
            "advertised": self.advertised,
            "stale": self.stale(),
            "on_stale": self.on_stale,
            "feed_id": self.feed_id,
            "seq": self.index.seq,
            "lag": max(0, self.head - self.index.seq),
            "seconds_since_contact": None if last is None else round(self._clock() - last, 3),
        }

    # -- lifecycle ---------------------------------------------------------------------------------------------

    @classmethod
    def over_mtls(
        cls, *, issuer: str, source: X509ContextSource, server_id: ServerIdMatcher, **options: Any
    ) -> RevocationFeedFollower:
        """A follower that reads the metadata and the feed over mTLS as ``source``'s X.509-SVID, from a server
        whose SPIFFE ID matches ``server_id`` (closed with the follower); ``options`` as for the constructor."""
        fetcher = HttpsJsonFetcher(source=source, server_id=server_id)
        opener = MtlsFeedOpener(source=source, server_id=server_id)
        follower = cls(issuer=issuer, fetch_json=fetcher, open_feed=opener, **options)
        follower._closers += [fetcher.aclose, opener.aclose]
        return follower

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="revocation-feed-follower")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for close in self._closers:
            await close()
        self._closers = []

    async def __aenter__(self) -> RevocationFeedFollower:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the loop ----------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        attempts = Attempts(self._backoff)
        while True:
            floor = 0.0
            try:
                endpoint = await self._discover()
                if endpoint is None:
                    attempts.reset()
                    await asyncio.sleep(self._rediscover_interval)
                    continue
                if await self._follow(endpoint):
                    attempts.reset()  # it was following: the next pause is a short, jittered one
                log.info("revocation feed of %s: the stream ended; reconnecting", self.issuer)
            except FeedRetry as exc:
                floor = exc.retry_after
                self._failed(str(exc))
            except (BrokerError, FeedProtocolError) as exc:
                self._failed(_reason(exc))
            except Exception as exc:  # never crash the follower: log the type, keep following
                log.error("revocation feed of %s: unexpected %s", self.issuer, type(exc).__name__)
            await asyncio.sleep(max(attempts.next(), floor))

    def _failed(self, reason: str) -> None:
        """One line per change of state: losing the feed is a WARNING, not reaching it yet INFO, retries DEBUG."""
        if self._failing:
            log.debug("revocation feed of %s: %s", self.issuer, reason)
            return
        self._failing = True
        level = logging.WARNING if self._last_contact is not None else logging.INFO
        log.log(level, "revocation feed of %s: %s (retrying with backoff)", self.issuer, reason)

    async def _discover(self) -> str | None:
        fresh = self._discovered_at is not None and self._clock() - self._discovered_at < self._rediscover_interval
        if fresh and self.advertised is not None:
            return self._endpoint
        document = await self._fetch_json(metadata_url(self.issuer))
        try:
            AuthorizationServerMetadata.from_document(document, issuer=self.issuer)  # RFC 8414 §3.3 first
        except MetadataError as exc:
            raise FeedRetry(str(exc)) from None
        assert isinstance(document, dict)  # from_document refused anything else
        endpoint = document.get(METADATA_KEY)
        self._discovered_at = self._clock()
        if endpoint is None:
            if self.advertised is not False:
                log.warning("%s does not advertise a revocation feed: its revocations are not followed", self.issuer)
            self.advertised, self._endpoint = False, None
            self._synced.set()
            return None
        if not isinstance(endpoint, str) or not _https_url(endpoint):
            raise FeedRetry(f"metadata {METADATA_KEY} is not an https URL without query")
        self.advertised, self._endpoint = True, endpoint
        return endpoint

    async def _follow(self, endpoint: str) -> bool:
        """One connection; True if it synchronised (the backoff starts over)."""
        headers = {"Accept": CONTENT_TYPE}
        url = endpoint
        if self.feed_id is not None and not self._start_over:
            url += f"?feed_id={quote(self.feed_id, safe='')}"
            if self.index.seq:
                headers["Last-Event-ID"] = str(self.index.seq)
        self.connects += 1
        async with self._open(url, headers) as response:
            if response.status != 200:
                await self._refused(response)
            content_type = response.headers.get("Content-Type", "")
            if content_type.split(";")[0].strip().lower() != CONTENT_TYPE:
                raise FeedProtocolError(f"the feed answered {content_type or 'no Content-Type'}")
            self._start_over = False
            session = _Session(sent_position="Last-Event-ID" in headers)
            parser = SseParser(max_event_bytes=self._max_event_bytes)
            async for chunk in with_timeout(response.chunks(), self.stale_after):
                for item in parser.feed(chunk):
                    self._handle(item, session)
                if session.feed_id is not None and not session.needs_snapshot:
                    self._contact()
        return session.feed_id is not None and not session.needs_snapshot

    async def _refused(self, response: FeedResponse) -> None:
        status = response.status
        if status == 400:
            self._start_over = True  # our position is not in this log (a restore from backup): snapshot next
        if status == 404:
            self._discovered_at = None
        retry_after = response.headers.get("Retry-After", "")
        # RFC 9110 §10.2.3 delay-seconds, capped: a hostile or broken server cannot park a follower for hours.
        floor = min(float(retry_after), MAX_RETRY_AFTER) if retry_after.isdigit() else 0.0
        error = await error_code(response)
        raise FeedRetry(f"the feed answered HTTP {status}{f' ({error})' if error else ''}", floor)

    def _handle(self, item: SseEvent | str, session: _Session) -> None:
        if isinstance(item, str):  # a comment: a heartbeat (contact is counted by the caller)
            self._check_heartbeat(item, session)
            return
        if item.event == EVENT_HELLO:
            if session.feed_id is not None:
                raise FeedProtocolError("a second hello")
            hello = parse_hello(item)
            session.feed_id, self.head = hello.feed_id, hello.head
            session.needs_snapshot = not session.sent_position or hello.feed_id != self.feed_id
            return
        if session.feed_id is None:
            raise FeedProtocolError(f"{item.event!r} before hello")
        if item.event == EVENT_SNAPSHOT:
            snapshot = parse_snapshot(item)
            if snapshot.feed_id != session.feed_id:
                raise FeedProtocolError("snapshot of another feed than its hello")
            self.index.reset(snapshot.entries, snapshot.head)
            self.feed_id, session.needs_snapshot = snapshot.feed_id, False
            self.head = max(self.head, snapshot.head)
            self._notify(snapshot.entries, snapshot=True)
        elif item.event in ENTRY_EVENTS:
            self._apply(parse_entry(item), session)
        else:
            log.debug("revocation feed: ignored an event of unknown type")

    def _check_heartbeat(self, comment: str, session: _Session) -> None:
        """A heartbeat names the replica's head after everything it sent before it on this stream: a head above
        ours means an entry went missing, so the stream is not trusted (no contact counted) and is reopened."""
        word, _, number = comment.partition(" ")
        if word != "heartbeat" or not number.isdigit() or session.feed_id is None or session.needs_snapshot:
            return
        if int(number) > self.index.seq:
            raise FeedProtocolError(f"the heartbeat says head {number}, this follower is at {self.index.seq}")

    def _apply(self, entry: LogEntry, session: _Session) -> None:
        if session.needs_snapshot:
            raise FeedProtocolError("an entry before the snapshot this follower needs")
        if entry.seq <= self.index.seq:
            return  # already applied
        if entry.seq != self.index.seq + 1:
            raise FeedProtocolError(f"gap in the feed: seq {entry.seq} after {self.index.seq}")
        self.index.apply(entry)
        self.head = max(self.head, entry.seq)
        self._notify((entry,), snapshot=False)

    def _contact(self) -> None:
        if self._failing or self._stale_reported:
            log.info("revocation feed of %s: following again at seq %d", self.issuer, self.index.seq)
            self._failing = self._stale_reported = False
        self._last_contact = now = self._clock()
        self._synced.set()
        if now - self._pruned_at > PRUNE_INTERVAL:
            self._pruned_at = now
            self.index.prune(datetime.fromtimestamp(self._wall_clock(), UTC))

    def _notify(self, entries: Sequence[LogEntry], *, snapshot: bool) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(entries, snapshot)
            except Exception as exc:  # a listener's bug must not stop the feed
                log.error("revocation feed listener failed: %s", type(exc).__name__)


def _https_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and bool(parts.hostname) and not parts.query and not parts.fragment


def _key_dropper(jwks: KeyRevocable) -> Listener:
    def drop(entries: Sequence[LogEntry], snapshot: bool) -> None:
        for entry in entries:
            if isinstance(entry.event, KeyRevoked):
                jwks.revoke(entry.event.kid)

    return drop


def _reason(exc: BaseException) -> str:
    return exc.description if isinstance(exc, BrokerError) and exc.description else str(exc) or type(exc).__name__
