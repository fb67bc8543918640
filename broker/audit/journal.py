"""The audit journal's store interface and its hash chain.

Each record holds the SHA-256 (FIPS 180-4) of the record before it, so a changed, deleted, inserted or reordered
record breaks the chain at a place ``audit verify`` can name. The digest of record ``n`` covers, in this order and
with fixed-width or length-prefixed fields (so no two different records encode the same bytes)::

    prev_hash (32 bytes) || seq (8 bytes, big-endian) || at (8 bytes, big-endian, signed microseconds since the
    Unix epoch, UTC) || len(event) (2 bytes) || event (UTF-8) || body (the rest)

The first record's ``prev_hash`` is :data:`GENESIS_HASH` (32 zero bytes). The store assigns ``seq`` (1, 2, ...)
and links each record to the one before it inside one transaction, so concurrent appenders on several replicas
produce one chain, never a fork. The store also refuses updates and deletes (database triggers).

``body`` is the record's canonical JSON (made by the caller); it never holds a token, a key or a secret.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

__all__ = [
    "GENESIS_HASH",
    "MAX_EVENT_LENGTH",
    "AuditJournalStore",
    "AuditRecord",
    "ChainedRow",
    "Entry",
    "Stamped",
    "chain_hash",
    "chain_hash_micros",
    "chained_rows",
    "check_entries",
    "check_event",
    "check_stamped",
    "epoch_micros",
    "link",
]

GENESIS_HASH = bytes(32)
MAX_EVENT_LENGTH = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_micros(at: datetime) -> int:
    """``at`` (timezone-aware) as whole microseconds since the Unix epoch."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("audit timestamps must be timezone-aware")
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def chain_hash(prev_hash: bytes, seq: int, at: datetime, event: str, body: bytes) -> bytes:
    """The SHA-256 that links record ``seq`` to ``prev_hash`` (the layout is in the module docstring)."""
    return chain_hash_micros(prev_hash, seq, epoch_micros(at), _event_field(event), body)


def _event_field(event: str) -> bytes:
    """``len(event) || event``, the event's part of the hashed layout."""
    encoded = event.encode()
    return len(encoded).to_bytes(2, "big") + encoded


def chain_hash_micros(prev_hash: bytes, seq: int, at_micros: int, event_field: bytes, body: bytes) -> bytes:
    """:func:`chain_hash` with ``at`` in microseconds and the event already encoded (:func:`_event_field`)."""
    if len(prev_hash) != 32:
        raise ValueError("prev_hash is a 32-byte SHA-256")
    head = prev_hash + seq.to_bytes(8, "big") + at_micros.to_bytes(8, "big", signed=True) + event_field
    return hashlib.sha256(head + body).digest()


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    at: datetime
    event: str
    body: bytes = field(repr=False)
    prev_hash: bytes
    hash: bytes

    def recomputed(self) -> bytes:
        """The hash this record should carry, from its own fields and ``prev_hash``."""
        return chain_hash(self.prev_hash, self.seq, self.at, self.event, self.body)


def check_event(event: str, at: datetime) -> None:
    """Refuse (ValueError) an event name that is empty, long or not printable ASCII, or a naive timestamp."""
    epoch_micros(at)
    if not event or len(event) > MAX_EVENT_LENGTH or not event.isascii() or not event.isprintable():
        raise ValueError(f"an audit event name is 1 to {MAX_EVENT_LENGTH} printable ASCII characters")


Entry = tuple[str, datetime, bytes]  # (event, at, body): one record to append


def check_entries(entries: Sequence[Entry]) -> list[Entry]:
    """``entries`` checked (:func:`check_event`) with each body copied to ``bytes``, before anything is written."""
    checked: list[Entry] = []
    for event, at, body in entries:
        check_event(event, at)
        checked.append((event, at, bytes(body)))
    return checked


def link(prev: AuditRecord | None, entries: Sequence[Entry]) -> list[AuditRecord]:
    """``entries`` as the records that follow ``prev`` (None: the chain is empty), in order."""
    records: list[AuditRecord] = []
    seq, prev_hash = (0, GENESIS_HASH) if prev is None else (prev.seq, prev.hash)
    for event, at, body in entries:
        seq += 1
        record = AuditRecord(seq, at, event, body, prev_hash, chain_hash(prev_hash, seq, at, event, body))
        records.append(record)
        prev_hash = record.hash
    return records


Stamped = tuple[str, int, bytes]  # (event, at in microseconds since the epoch, body): a batched record to append
ChainedRow = tuple[int, int, str, bytes, bytes, bytes]  # (seq, at in microseconds, event, body, prev_hash, hash)


def check_stamped(entries: Sequence[Stamped]) -> None:
    """Refuse (ValueError) a batch with a bad event name (:func:`check_event`; each distinct name checked once)."""
    for event in {entry[0] for entry in entries}:
        check_event(event, _EPOCH)


def chained_rows(tail: tuple[int, bytes] | None, entries: Sequence[Stamped]) -> list[ChainedRow]:
    """``entries`` linked after ``tail`` (its ``seq`` and ``hash``; None: the chain is empty), in order: the
    same chain :func:`link` makes, without building a record object per entry."""
    seq, prev_hash = (0, GENESIS_HASH) if tail is None else tail
    encoded: dict[str, bytes] = {}
    rows: list[ChainedRow] = []
    for event, at, body in entries:
        seq += 1
        event_field = encoded.get(event)
        if event_field is None:
            event_field = encoded[event] = _event_field(event)
        digest = chain_hash_micros(prev_hash, seq, at, event_field, body)
        rows.append((seq, at, event, body, prev_hash, digest))
        prev_hash = digest
    return rows


class AuditJournalStore(Protocol):
    async def append(self, event: str, at: datetime, body: bytes) -> AuditRecord:
        """Add one record at the end of the chain (next ``seq``, linked to the last hash) and return it."""
        ...

    async def append_many(self, entries: Sequence[Entry]) -> Sequence[AuditRecord]:
        """Add ``entries`` in order at the end of the chain, in one transaction under one chain lock.

        All or nothing: an invalid entry (:func:`check_event`) refuses the whole batch before anything is written.
        """
        ...

    async def read(self, first: int = 1, limit: int = 1000) -> Sequence[AuditRecord]:
        """Up to ``limit`` records from ``seq >= first``, in order."""
        ...

    async def last(self) -> AuditRecord | None:
        """The newest record (its ``hash`` is the chain's head), or None for an empty journal."""
        ...
