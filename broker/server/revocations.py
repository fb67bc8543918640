"""The replica's view of the revocation log: a :class:`~broker.events.revocations.RevocationIndex` kept in step
with the store's log (:class:`~broker.tokens.revocation.RevocationLogStore`), and what the token service asks of it.

Keeping in step (one read at a time, entries applied in ``seq`` order):

* :meth:`ReplicaRevocations.open` takes a snapshot before the service serves, so no request is answered from an
  index that has never read the log (a store that cannot be read fails the start, as the keyring's does);
* :meth:`ReplicaRevocations.follow` follows the store's ``revocations`` change topic: each change reads the log's
  tail (``read(after=index.seq)``, in pages); a resync change (the first of every subscription, and every one
  after the feed reconnected or found the counters lower, e.g. a store restored from a backup) takes a snapshot;
* a read refused with :class:`~broker.tokens.revocation.LogBehind` (entries this replica had not read were
  pruned), :class:`~broker.tokens.revocation.LogAhead` (the log is behind this replica: restored from a backup), or
  a page from another log (its ``feed_id`` changed) takes a snapshot instead;
* :meth:`ReplicaRevocations.maintain` (run with :meth:`~ReplicaRevocations.follow` by
  :meth:`~ReplicaRevocations.run`) re-reads the tail every :data:`CONFIRM_INTERVAL` (a lost change event costs
  at most that), drops what no longer cuts anything off from the index, and prunes the store's log every
  :data:`PRUNE_INTERVAL` (any replica may: pruning is idempotent);
* :meth:`ReplicaRevocations.catch_up` reads the tail now, for ``/introspect`` and ``/revoke``, so that a
  revocation made on another replica is reported at once. Callers that arrive while a read is waiting to start
  share it (one query for all of them); a read already under way is never shared with a caller that arrived
  after it began, because it may have missed that caller's entry.

What it answers:

* the token endpoint's quarantine hook (:class:`~broker.tokens.endpoint.Quarantine`): a client whose SPIFFE ID
  is quarantined now is refused with :class:`~broker.tokens.endpoint.QuarantinedError` (``access_denied``). Like
  the keyring's signing key, the index fails closed only when it has not been confirmed against the store for
  ``max_unconfirmed`` seconds (``temporarily_unavailable``): a short store outage does not stop issuance, a long
  one does, since a quarantine made elsewhere cannot reach this replica;
* :meth:`ReplicaRevocations.refusal` and :meth:`ReplicaRevocations.revoke`, the
  :class:`~broker.tokens.presented.Revocations` of ``/introspect`` and ``/revoke``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from broker.errors import BrokerError, TemporarilyUnavailableError
from broker.events import ChangeFeed
from broker.events.revocations import RevocationIndex, TokenRevoked
from broker.events.topics import REVOCATIONS
from broker.tokens.endpoint import QuarantinedError
from broker.tokens.issuer import AuthenticatedClient
from broker.tokens.presented import CheckedToken
from broker.tokens.revocation import LogAhead, LogBehind, RevocationLogStore

__all__ = ["CONFIRM_INTERVAL", "PAGE_SIZE", "PRUNE_INTERVAL", "ReplicaRevocations"]

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
CONFIRM_INTERVAL = 5.0  # seconds between reads of the log's tail without a change event
PRUNE_INTERVAL = 300.0  # seconds between prunes of the store's log
RESUBSCRIBE_DELAY = 1.0
DEFAULT_MAX_UNCONFIRMED = 60.0


class ReplicaRevocations:
    """The index and its reads; :meth:`open` it, then run :meth:`follow` and :meth:`maintain` as tasks."""

    def __init__(
        self,
        log_store: RevocationLogStore,
        changes: ChangeFeed,
        *,
        clock: Callable[[], float] = time.time,
        max_unconfirmed: float = DEFAULT_MAX_UNCONFIRMED,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.index = RevocationIndex()
        self._log, self._changes, self._clock = log_store, changes, clock
        self.max_unconfirmed = max_unconfirmed
        self._page_size = page_size
        self._feed_id: str | None = None
        self._confirmed_at: float | None = None  # the clock at the end of the last successful read
        self._read_lock = asyncio.Lock()  # one read at a time: entries are applied in seq order
        self._revoke_lock = asyncio.Lock()  # check-then-append of one replica's revocations, one at a time
        self._next_read: asyncio.Future[None] | None = None  # the shared read not yet under way
        self._reads: set[asyncio.Task[None]] = set()
        self.reads = 0  # queries of the log (a read of the tail may take several pages)

    @classmethod
    async def open(
        cls,
        log_store: RevocationLogStore,
        changes: ChangeFeed,
        *,
        clock: Callable[[], float] = time.time,
        max_unconfirmed: float = DEFAULT_MAX_UNCONFIRMED,
    ) -> ReplicaRevocations:
        """A view that has read a snapshot of the log (a store error propagates: the service does not start)."""
        view = cls(log_store, changes, clock=clock, max_unconfirmed=max_unconfirmed)
        await view.resync()
        return view

    # -- what the token service asks --

    def check(self, client: AuthenticatedClient) -> None:
        """The token endpoint's quarantine hook (see the module docstring)."""
        self._check_confirmed()
        if self.index.quarantine_of(str(client.spiffe_id), self._now()) is not None:
            raise QuarantinedError()

    def refusal(self, token: CheckedToken) -> str | None:
        self._check_confirmed()
        return self.index.refusal(
            jti=token.jti, kid=token.kid, subject=token.subject, issued_at=token.issued_at, now=self._now()
        )

    async def revoke(self, token: CheckedToken) -> bool:
        """Append ``TokenRevoked(jti, exp)`` unless the log (read up to now) already revokes this ``jti``.

        A token refused for another reason (its subject's quarantine) is still revoked by ``jti``: a release
        must not bring it back."""
        async with self._revoke_lock:
            await self.catch_up()
            if self.refusal(token) == "revoked":
                return False
            await self._log.append([TokenRevoked(token.jti, token.expires_at)])
            await self.catch_up()  # the entry lands in the index in seq order, with any entry before it
            return True

    def problem(self) -> str | None:
        """None when the index is confirmed against the store, else why not (for readiness)."""
        try:
            self._check_confirmed()
        except TemporarilyUnavailableError as exc:
            return exc.description
        return None

    # -- keeping in step --

    async def catch_up(self) -> None:
        """Apply every entry committed before this call (see the module docstring); a store error propagates."""
        waiter = self._next_read
        if waiter is None:
            waiter = self._next_read = asyncio.get_running_loop().create_future()
            waiter.add_done_callback(_retrieve)
            task = asyncio.create_task(self._shared_read(waiter), name="revocation-log-read")
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)
        await asyncio.shield(waiter)

    async def _shared_read(self, waiter: asyncio.Future[None]) -> None:
        try:
            async with self._read_lock:
                self._detach(waiter)  # callers from now on wait for the next read
                await self._read_tail()
        except asyncio.CancelledError:  # closing: the waiters are cancelled too
            self._detach(waiter)
            waiter.cancel()
            raise
        except Exception as exc:
            self._detach(waiter)
            waiter.set_exception(exc)
        else:
            waiter.set_result(None)

    def _detach(self, waiter: asyncio.Future[None]) -> None:
        if self._next_read is waiter:
            self._next_read = None

    async def _read_tail(self) -> None:
        if self._feed_id is None:
            await self._snapshot()
            return
        while True:
            try:
                page = await self._log.read(self.index.seq, limit=self._page_size)
            except LogBehind:
                await self._snapshot()  # entries this replica had not read were pruned
                return
            except LogAhead:
                log.warning("the revocation log is behind this replica (restored from a backup?): taking a snapshot")
                await self._snapshot()
                return
            self.reads += 1
            if page.feed_id != self._feed_id:
                log.warning("the revocation log was replaced by another one: taking a snapshot")
                await self._snapshot()
                return
            for entry in page.entries:
                self.index.apply(entry)
            if not page.entries or self.index.seq >= page.head:
                self._confirmed_at = self._clock()
                return

    async def _snapshot(self) -> None:
        page = await self._log.snapshot(self._now())
        self.reads += 1
        self.index.reset(page.entries, page.head)
        self._feed_id = page.feed_id
        self._confirmed_at = self._clock()

    async def resync(self) -> None:
        """Take a snapshot now (a resync change)."""
        async with self._read_lock:
            await self._snapshot()

    async def follow(self) -> None:
        """Follow the ``revocations`` change topic until cancelled (a task; see the module docstring)."""
        while True:
            try:
                subscription = self._changes.subscribe(REVOCATIONS)
            except BrokerError as exc:
                log.error("cannot follow the revocation log's changes (%s); trying again in %g s",
                          exc.description or exc.error, RESUBSCRIBE_DELAY)  # fmt: skip
                await asyncio.sleep(RESUBSCRIBE_DELAY)
                continue
            try:
                async for change in subscription:
                    try:
                        await (self.resync() if change.resync else self.catch_up())
                    except BrokerError as exc:
                        log.error("revocation log read failed: %s", exc.description or exc.error)
            finally:
                subscription.close()
            log.error("the store's change feed ended; subscribing again in %g s", RESUBSCRIBE_DELAY)
            await asyncio.sleep(RESUBSCRIBE_DELAY)

    async def maintain(self, interval: float = CONFIRM_INTERVAL, prune_interval: float = PRUNE_INTERVAL) -> None:
        """Until cancelled: read the tail every ``interval``, prune the index, and the store's log at times."""
        next_prune = self._clock() + prune_interval
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                await self.catch_up()
                self.index.prune(self._now())
                if self._clock() >= next_prune:
                    next_prune = self._clock() + prune_interval
                    pruned = await self._log.prune(self._now())
                    log.debug("revocation log: pruned %d entries", pruned)
            except BrokerError as exc:
                if not failing:
                    log.error("revocation log: cannot read the store (%s)", exc.description or exc.error)
                failing = True
            else:
                if failing:
                    log.info("revocation log: reading the store again")
                failing = False

    async def run(self) -> None:
        """:meth:`follow` and :meth:`maintain` until cancelled; then the reads under way are cancelled too."""
        try:
            await asyncio.gather(self.follow(), self.maintain())
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Cancel the reads under way (the tasks :meth:`follow` and :meth:`maintain` are their owner's)."""
        for task in list(self._reads):
            task.cancel()
        for task in list(self._reads):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- helpers --

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _check_confirmed(self) -> None:
        if self._confirmed_at is None:
            raise TemporarilyUnavailableError("the revocation log has not been read yet")
        if self._clock() - self._confirmed_at > self.max_unconfirmed:
            raise TemporarilyUnavailableError(
                f"the revocation log has not been confirmed against the store for over {self.max_unconfirmed:g} s"
            )


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a shared read's failure as seen: every waiter may have been cancelled before it landed."""
    if not future.cancelled():
        future.exception()
