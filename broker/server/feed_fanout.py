"""The revocation feed's fan-out: one reader of the revocation log per replica, the same bytes to every follower.

What one follower costs, and why (issue 10, "Design it for a fleet"):

* **One read per change, per replica.** :class:`Broadcaster` follows the store's ``revocations`` change topic and
  reads the new entries once (:meth:`~broker.tokens.revocation.RevocationLogStore.read` after its head), however
  many followers there are. Followers never read the store while they follow.
* **One serialisation per entry.** Each entry is rendered once as an SSE event (:mod:`broker.events.feed`) into a
  :class:`Frame` holding both HTTP/1.1 encodings (a chunk of ``Transfer-Encoding: chunked``, and the raw bytes for
  an HTTP/1.0 follower); the same ``bytes`` object is handed to every follower's transport. The entries of one
  read (a quarantine can append thousands of revoked tokens at once) go out as one frame: one TLS record and one
  ``send`` per follower, not one per entry.
* **A fan-out does not stall the replica.** It writes to :data:`FAN_OUT_BATCH` followers, then lets the event
  loop run (``/token`` requests, other handlers), then goes on; entries stay in order (one fan-out at a time).
* **No task, timer or queue per follower.** A follower is its transport and a future that its aiohttp handler
  (which aiohttp needs anyway) awaits. Writes go straight to the transport from the broadcaster; one global tick
  sends the heartbeat (one rendered comment for all) and sweeps closed connections and followers whose X.509-SVID
  has expired (authentication happens once per stream, so a stream must not outlive its certificate).
* **Slow followers are dropped, not buffered.** A follower whose transport holds more than ``max_buffer`` unsent
  bytes is aborted; it reconnects and resumes from its last ``seq`` (nothing is lost: the log is the buffer).
* **Reconnect storms.** The last ``ring_size`` frames stay in memory, so a follower that resumes within them (all
  of them do after a replica restart: the ring is filled from the log at start) costs no store read; a
  snapshot is rendered at most once at a time and cached per head (:meth:`Broadcaster.snapshot`), so ten thousand
  followers starting over cost one store read and one serialisation. Followers reconnect with jittered backoff
  (:mod:`broker.verify.feed`) and the number of followers per replica is capped (:mod:`broker.server.feed`).

If the log's ``feed_id`` changes or its head goes backwards (a store restored from a backup), or the broadcaster
itself falls below the horizon, every follower is closed: each reconnects and starts over from a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from broker.errors import BrokerError
from broker.events.change import ChangeFeed
from broker.events.feed import entry_event, heartbeat_comment, hello_event, snapshot_event
from broker.events.topics import REVOCATIONS
from broker.tokens.revocation import LogAhead, LogBehind, LogPage, RevocationLogStore

__all__ = ["Broadcaster", "Follower", "Frame", "Snapshot"]

log = logging.getLogger(__name__)

READ_LIMIT = 1000  # entries per store read
SNAPSHOT_MAX_AGE = 60.0  # seconds a cached snapshot serves the same head (its expired entries are harmless)
SWEEP_INTERVAL = 1.0  # seconds between sweeps for closed connections
RESUBSCRIBE_DELAY = 1.0
FAN_OUT_BATCH = 256  # followers written between two yields to the event loop (about 4 ms of writes)


@dataclass(frozen=True, slots=True)
class Frame:
    """One rendered event in both encodings: ``chunked`` (HTTP/1.1) and ``raw`` (HTTP/1.0, close-delimited)."""

    raw: bytes
    chunked: bytes

    @classmethod
    def of(cls, payload: bytes) -> Frame:
        return cls(payload, b"%x\r\n%b\r\n" % (len(payload), payload))


@dataclass(eq=False, slots=True)
class Follower:
    """An attached follower: its transport, its encoding, and the future its request handler awaits."""

    transport: asyncio.Transport
    chunked: bool
    done: asyncio.Future[None]
    who: str = ""
    not_after: float = float("inf")  # its X.509-SVID's expiry: the stream is closed then


@dataclass(frozen=True, slots=True)
class Snapshot:
    feed_id: str
    head: int
    frame: Frame
    taken: float = field(compare=False)


class Broadcaster:
    """Reads ``log`` on every ``revocations`` change and writes each new entry to every attached follower."""

    def __init__(
        self,
        log: RevocationLogStore,
        changes: ChangeFeed,
        *,
        ring_size: int = 4096,
        max_buffer: int = 1024 * 1024,
        heartbeat: float = 10.0,
        sweep_interval: float = SWEEP_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._log = log
        self._changes = changes
        self._max_buffer = max_buffer
        self._heartbeat = heartbeat
        self._sweep = min(sweep_interval, heartbeat)
        self._clock = clock
        self._ring: deque[tuple[int, Frame]] = deque(maxlen=ring_size)
        self._followers: set[Follower] = set()
        self._lock = asyncio.Lock()
        self._snapshot: Snapshot | None = None
        self._snapshot_task: asyncio.Task[Snapshot] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._hello: Frame | None = None
        self.feed_id = ""
        self.head = 0
        self.horizon = 0
        self.dropped_slow = 0
        self._store_silent = False

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the log's position (one snapshot, kept for the first followers), fill the ring, start following."""
        await self._restart()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow(), name="revocation-feed"),
                       loop.create_task(self._tick(), name="revocation-feed-tick")]  # fmt: skip

    async def stop(self) -> None:
        """Release every follower (their handlers return) and stop following."""
        self.close_all()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._snapshot_task is not None:
            self._snapshot_task.cancel()

    async def _restart(self) -> None:
        """Take a snapshot and refill the ring aside, then switch to both at once (no await in between): a follower
        attaching meanwhile never sees a half-filled ring under a new head, which would make it skip entries."""
        page = await self._log.snapshot(datetime.fromtimestamp(self._clock(), UTC))
        ring: deque[tuple[int, Frame]] = deque(maxlen=self._ring.maxlen)
        start = max(page.horizon, page.head - (ring.maxlen or 0))
        with contextlib.suppress(LogBehind, LogAhead):  # pruned or reset meanwhile: start with an empty ring
            while start < page.head:
                entries = (await self._log.read(start, limit=READ_LIMIT)).entries
                if not entries:
                    break
                kept = (entry for entry in entries if entry.seq <= page.head)
                ring.extend((entry.seq, Frame.of(entry_event(entry))) for entry in kept)
                start = entries[-1].seq
        if ring and ring[0][0] > max(page.horizon, page.head - (ring.maxlen or 0)) + 1:
            ring.clear()  # a gap at its start (pruned meanwhile): followers that far back take the snapshot
        self._ring = ring
        self._moved(page.feed_id, page.head, page.horizon)
        self._snapshot = _render(page, self._clock())

    def _moved(self, feed_id: str, head: int, horizon: int) -> None:
        self.feed_id, self.head, self.horizon = feed_id, head, horizon
        self._hello = None

    # -- following the log -------------------------------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            try:
                subscription = self._changes.subscribe(REVOCATIONS)
            except BrokerError as exc:
                log.error("revocation feed: cannot follow the store (%s); retrying", exc.description or exc.error)
                await asyncio.sleep(RESUBSCRIBE_DELAY)
                continue
            try:
                async for _change in subscription:
                    await self._catch_up_logged()
            finally:
                subscription.close()
            await asyncio.sleep(RESUBSCRIBE_DELAY)

    async def _catch_up_logged(self) -> None:
        try:
            await self.catch_up()
        except BrokerError as exc:
            log.error("revocation feed: reading the log failed (%s)", exc.description or exc.error)

    async def catch_up(self, target: int | None = None) -> None:
        """Read and send every entry after :attr:`head` (unless :attr:`head` has reached ``target`` meanwhile)."""
        async with self._lock:
            while target is None or self.head < target:
                try:
                    page = await self._log.read(self.head, limit=READ_LIMIT)
                except (LogBehind, LogAhead) as exc:
                    await self._reset(type(exc).__name__)
                    return
                if page.feed_id != self.feed_id:
                    await self._reset("a new feed_id")
                    return
                payloads = [entry_event(entry) for entry in page.entries]
                self._ring.extend((entry.seq, Frame.of(p)) for entry, p in zip(page.entries, payloads, strict=True))
                first, self.head = self.head + 1, page.entries[-1].seq if page.entries else self.head
                self._moved(self.feed_id, self.head, page.horizon)
                if payloads:
                    started = time.monotonic()
                    count = await self.fan_out(Frame.of(b"".join(payloads)))  # a page of entries: one write each
                    log.info("revocation feed: seq %d-%d sent to %d followers in %.1f ms",
                             first, self.head, count, (time.monotonic() - started) * 1000)  # fmt: skip
                if len(page.entries) < READ_LIMIT:
                    return

    async def _reset(self, why: str) -> None:
        log.warning("revocation feed: the log was reset (%s); every follower starts over", why)
        self.close_all()
        await self._restart()

    async def reach(self, seq: int, timeout: float) -> bool:
        """Read the log until :attr:`head` is at least ``seq`` (a follower attached to another replica may be
        ahead of this one by the change feed's latency); False if it is not within ``timeout`` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.head < seq and asyncio.get_running_loop().time() < deadline:
            try:
                await self.catch_up(seq)
            except BrokerError as exc:
                log.error("revocation feed: reading the log failed (%s)", exc.description or exc.error)
            if self.head < seq:
                await asyncio.sleep(0.05)
        return self.head >= seq

    # -- followers ---------------------------------------------------------------------------------------------

    def hello(self) -> Frame:
        if self._hello is None:
            self._hello = Frame.of(hello_event(self.feed_id, self.head))
        return self._hello

    def covers(self, seq: int) -> bool:
        """Whether the ring holds every entry after ``seq`` (a follower at ``seq`` resumes without a store read)."""
        if seq == self.head:
            return True
        return bool(self._ring) and self._ring[0][0] <= seq + 1 and seq < self.head

    def frames_after(self, seq: int) -> list[Frame] | None:
        """The ring's frames after ``seq``, or None if the ring no longer reaches back to ``seq + 1``."""
        if seq >= self.head:
            return []
        if not self.covers(seq):
            return None
        return [frame for number, frame in self._ring if number > seq]

    async def snapshot(self) -> Snapshot:
        """A snapshot at the current head: cached per head, and at most one rendered at a time (single flight)."""
        cached = self._snapshot
        if (cached is not None and cached.feed_id == self.feed_id and cached.head == self.head
                and self._clock() - cached.taken < SNAPSHOT_MAX_AGE):  # fmt: skip
            return cached
        if self._snapshot_task is None:
            self._snapshot_task = asyncio.get_running_loop().create_task(self._render_snapshot())
            self._snapshot_task.add_done_callback(self._snapshot_done)
        return await asyncio.shield(self._snapshot_task)

    async def _render_snapshot(self) -> Snapshot:
        page = await self._log.snapshot(datetime.fromtimestamp(self._clock(), UTC))
        snapshot = _render(page, self._clock())
        if page.feed_id == self.feed_id:
            self._snapshot = snapshot
        return snapshot

    def _snapshot_done(self, task: asyncio.Task[Snapshot]) -> None:
        self._snapshot_task = None
        if not task.cancelled():
            task.exception()  # retrieved: every waiter gets it too

    def attach(self, follower: Follower, after: int) -> bool:
        """Send the ring's frames after ``after`` and start broadcasting to ``follower``; False if it cannot resume
        here (the ring no longer reaches back to it; it reconnects). Runs without awaiting, so no entry is missed."""
        frames = self.frames_after(after)
        if frames is None:
            return False
        for frame in frames:
            if not self._write(follower, frame):
                return False
        self._followers.add(follower)
        return True

    async def fan_out(self, frame: Frame) -> int:
        """Write ``frame`` to every follower attached now; how many. Yields to the event loop every
        :data:`FAN_OUT_BATCH` followers, so a large fan-out does not stall the replica's other requests (``/token``)
        for its whole length. A follower attached meanwhile is not in this fan-out: it got the frame from the ring."""
        followers = tuple(self._followers)
        for start in range(0, len(followers), FAN_OUT_BATCH):
            for follower in followers[start : start + FAN_OUT_BATCH]:
                if follower in self._followers:  # not released meanwhile
                    self._write(follower, frame)
            await asyncio.sleep(0)
        return len(followers)

    def _write(self, follower: Follower, frame: Frame) -> bool:
        transport = follower.transport
        if transport.is_closing():
            self.release(follower)
            return False
        if transport.get_write_buffer_size() > self._max_buffer:
            self.dropped_slow += 1
            log.info("revocation feed: dropped slow follower %s (it resumes when it reconnects)", follower.who)
            transport.abort()
            self.release(follower)
            return False
        transport.write(frame.chunked if follower.chunked else frame.raw)
        return True

    def release(self, follower: Follower) -> None:
        self._followers.discard(follower)
        if not follower.done.done():
            follower.done.set_result(None)

    def close_all(self) -> None:
        """End every follower's stream (its handler returns and aiohttp ends the response; it reconnects)."""
        for follower in tuple(self._followers):
            self.release(follower)

    def __len__(self) -> int:
        return len(self._followers)

    # -- the one global tick -----------------------------------------------------------------------------------

    async def _store_answers(self) -> bool:
        """Read the log's tail (which also sends anything a lost change event left behind); False if the store
        does not answer. A heartbeat says "this replica has just read the log": a replica cut off from the store
        sends none, so its followers go stale (and, failing closed, refuse) instead of trusting a frozen view."""
        try:
            await self.catch_up()
        except BrokerError as exc:
            if not self._store_silent:
                log.error("revocation feed: the store does not answer (%s); no heartbeats until it does",
                          exc.description or exc.error)  # fmt: skip
            self._store_silent = True
            return False
        if self._store_silent:
            log.warning("revocation feed: the store answers again; heartbeats resume")
        self._store_silent = False
        return True

    async def _tick(self) -> None:
        beat = 0.0
        while True:
            await asyncio.sleep(self._sweep)
            beat += self._sweep
            if beat >= self._heartbeat - 1e-9:
                beat = 0.0
                if await self._store_answers():
                    await self.fan_out(Frame.of(heartbeat_comment(self.head)))
            now = self._clock()
            for follower in tuple(self._followers):
                if follower.not_after <= now or follower.transport.is_closing():
                    self.release(follower)  # an expired SVID: the stream ends, it reconnects with its renewed one


def _render(page: LogPage, now: float) -> Snapshot:
    return Snapshot(page.feed_id, page.head, Frame.of(snapshot_event(page.feed_id, page.head, page.entries)), now)
