"""The audit trail: how the broker writes to the journal.

* :meth:`AuditTrail.record` is for events that must not wait on the store (the server's housekeeping: a key
  rotated or retired on schedule, a policy reloaded): it stamps the event with the time it happened and queues it
  on a :class:`~broker._batch.BatchWriter`, which appends batches with one
  :meth:`~broker.audit.journal.AuditJournalStore.append_many` (one transaction, one chain lock). It returns False
  when the queue is full. (The token endpoint's ``token.issued`` and ``token.refused`` records go with the
  issuance ledger's rows instead, in one transaction: :mod:`broker.server.recorder`.)
* :meth:`AuditTrail.record_now` is for administrative changes (a key rotated or revoked, a KEK rotated, a policy
  reloaded, an admin call): it appends at once and returns the record, so the change is on the journal before the
  call that made it returns. A store that cannot take it raises, and the admin call fails.

What a crash can lose is the batch writer's (:mod:`broker._batch`): the queued events of the last batch window
while the store keeps up. ``record_now`` loses nothing it acknowledged. A batch whose commit succeeded but whose
answer was lost (a connection cut at that moment) is appended again by the retry: the journal then holds those
events twice, never fewer. The chain orders records as the store appended them: an event passed to
``record_now``, or queued by another writer, may come before events recorded earlier and still queued (each keeps
its own ``at``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType

from broker._batch import BatchWriter
from broker.audit.events import AuditEvent
from broker.audit.journal import AuditJournalStore, AuditRecord, Entry

__all__ = ["AuditTrail"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AuditTrail:
    """Events into the journal: batched (:meth:`record`) or at once (:meth:`record_now`). Start, then close."""

    def __init__(
        self,
        journal: AuditJournalStore,
        *,
        batch_window: float = 0.05,
        batch_max: int = 512,
        capacity: int = 8192,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._journal = journal
        self._clock = clock
        self.writer: BatchWriter[Entry] = BatchWriter(
            self._append, name="audit", batch_window=batch_window, batch_max=batch_max, capacity=capacity
        )

    async def _append(self, entries: Sequence[Entry]) -> None:
        await self._journal.append_many(entries)

    def has_room(self) -> bool:
        return self.writer.has_room()

    def record(self, event: AuditEvent) -> bool:
        """Queue ``event`` (stamped now) for the next batch; False when the trail cannot take it."""
        return self.writer.submit((event.event, self._clock(), event.body()))

    async def record_now(self, event: AuditEvent) -> AuditRecord:
        """Append ``event`` now and return its record (raises a store error when the journal cannot take it)."""
        return await self._journal.append(event.event, self._clock(), event.body())

    def start(self) -> None:
        self.writer.start()

    async def flush(self) -> None:
        await self.writer.flush()

    async def close(self, timeout: float | None = None) -> int:
        """Write what is queued and stop; the number of events lost (0 unless ``timeout`` passed first)."""
        return await self.writer.close(timeout)

    async def __aenter__(self) -> AuditTrail:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
