"""``audit verify``: walk the hash chain and name the first record that breaks it, and how.

The records are read in ``seq`` order. Record ``n`` is sound when its ``seq`` follows the one before, its
``prev_hash`` is that record's ``hash`` (:data:`~broker.audit.journal.GENESIS_HASH` for the first), and its
``hash`` is the SHA-256 of its own fields (:func:`~broker.audit.journal.chain_hash`). At the first record that is
not, the verifier looks at up to ``window`` records on either side and names the break:

* ``changed``: a record's fields no longer give its hash, or it was re-hashed and its successor no longer links
  to it;
* ``deleted``: a ``seq`` is missing, or later records were renumbered to close the gap (their hashes still cover
  their old ``seq``);
* ``inserted``: a record is not in the chain (its successor links past it to the one before), or a ``seq`` repeats;
* ``reordered``: a record links to, or its fields belong at, a record that comes after it;
* ``truncated``: the chain ends before the head the operator recorded (``expect_head``).

What a hash chain alone cannot detect: deleting the newest records (the tail), or rewriting the tail with a
valid chain, leaves a chain that verifies; and the chain has no key, so whoever can write to the database can
append a well-formed forged record at the end. An operator covers it by keeping the head elsewhere: ``audit verify``
prints the head ``seq`` and ``hash``; store it outside the database (a ticket, a log shipped off the host, a
SIEM), and pass it back with ``--expect-head SEQ:HASH``. The journal may only have grown since then, and the
record at that ``seq`` must still carry that hash.
"""

from __future__ import annotations

import contextlib
import enum
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

from broker.audit.journal import GENESIS_HASH, AuditJournalStore, AuditRecord, chain_hash

__all__ = [
    "BreakKind",
    "ChainBreak",
    "ChainWalker",
    "Head",
    "VerifyReport",
    "read_all",
    "verify_chain",
    "verify_journal",
]

WINDOW = 64  # records looked at on either side of the first break, to name it


class BreakKind(enum.StrEnum):
    CHANGED = "changed"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"


@dataclass(frozen=True, slots=True)
class Head:
    """A record's ``seq`` and ``hash``: the chain's head, as printed by ``audit verify`` and kept elsewhere."""

    seq: int
    hash: bytes

    @classmethod
    def parse(cls, text: str) -> Head:
        """``SEQ:HEX`` (as :meth:`__str__` writes it)."""
        seq, sep, digest = text.partition(":")
        try:
            head = cls(int(seq), bytes.fromhex(digest))
        except ValueError:
            head = None
        if not sep or head is None or head.seq < 1 or len(head.hash) != 32:
            raise ValueError("a chain head is SEQ:HASH, as audit verify prints it (e.g. 42:9f86d0...)")
        return head

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash.hex()}"


@dataclass(frozen=True, slots=True)
class ChainBreak:
    seq: int  # the record named (for a deletion: the first missing seq)
    kind: BreakKind
    detail: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """``records`` sound records were checked; ``head`` is the last sound one (None for an empty journal)."""

    records: int
    head: Head | None
    first_break: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.first_break is None


class ChainWalker:
    """Checks records one at a time (:meth:`step`), keeping only the last ``window``; then :meth:`report`."""

    def __init__(self, *, expect_head: Head | None = None, window: int = WINDOW) -> None:
        self.expect_head = expect_head
        self.window = window
        self.count = 0
        self.broken: AuditRecord | None = None
        self._recent: deque[AuditRecord] = deque(maxlen=window)
        self._rewritten: ChainBreak | None = None

    def step(self, record: AuditRecord) -> bool:
        """Whether ``record`` is sound after those before it; after the first False, call :meth:`report`."""
        prev = self._recent[-1] if self._recent else None
        if not _sound(prev, record):
            self.broken = record
            return False
        head = self.expect_head
        if head is not None and record.seq == head.seq and record.hash != head.hash:
            detail = f"record {record.seq} does not carry the recorded head hash: the chain was rewritten"
            self._rewritten = ChainBreak(record.seq, BreakKind.CHANGED, detail)
            return False
        self._recent.append(record)
        self.count += 1
        return True

    def report(self, ahead: Sequence[AuditRecord] = ()) -> VerifyReport:
        """The verdict; ``ahead``: up to ``window`` records that follow the broken one, to name the break."""
        last = self._recent[-1] if self._recent else None
        if self._rewritten is not None:
            return VerifyReport(self.count, _head(last), self._rewritten)
        if self.broken is not None:
            return VerifyReport(self.count, _head(last), _classify(list(self._recent), self.broken, ahead))
        head = self.expect_head
        if head is not None and (last is None or last.seq < head.seq):
            ends = "the journal is empty" if last is None else f"the chain ends at {last.seq}"
            detail = f"{ends}, before the recorded head {head.seq}: newer records were deleted"
            return VerifyReport(self.count, _head(last), ChainBreak(head.seq, BreakKind.TRUNCATED, detail))
        return VerifyReport(self.count, _head(last), None)


def verify_chain(
    records: Iterable[AuditRecord], *, expect_head: Head | None = None, window: int = WINDOW
) -> VerifyReport:
    """Check ``records`` (in the order read, ``seq`` ascending) and name the first break."""
    walker = ChainWalker(expect_head=expect_head, window=window)
    iterator = iter(records)
    for record in iterator:
        if not walker.step(record):
            return walker.report(list(islice(iterator, window)))
    return walker.report()


async def read_all(
    journal: AuditJournalStore, *, first: int = 1, page: int = 1000
) -> AsyncGenerator[AuditRecord, None]:
    """Every record from ``seq >= first``, a page at a time."""
    while True:
        records = await journal.read(first, page)
        for record in records:
            yield record
        if len(records) < page:
            return
        first = records[-1].seq + 1


async def verify_journal(journal: AuditJournalStore, *, expect_head: Head | None = None) -> VerifyReport:
    """:func:`verify_chain` over a whole journal, read a page at a time (only a window of records is kept)."""
    walker = ChainWalker(expect_head=expect_head)
    async with contextlib.aclosing(read_all(journal)) as records:
        async for record in records:
            if not walker.step(record):
                return walker.report(await journal.read(record.seq + 1, walker.window))
    return walker.report()


def _head(record: AuditRecord | None) -> Head | None:
    return None if record is None else Head(record.seq, record.hash)


def _sound(prev: AuditRecord | None, record: AuditRecord) -> bool:
    seq, prev_hash = (1, GENESIS_HASH) if prev is None else (prev.seq + 1, prev.hash)
    return record.seq == seq and record.prev_hash == prev_hash and record.recomputed() == record.hash


def _hash_at(record: AuditRecord, seq: int, prev_hash: bytes) -> bytes:
    return chain_hash(prev_hash, seq, record.at, record.event, record.body)


def _classify(before: Sequence[AuditRecord], record: AuditRecord, ahead: Sequence[AuditRecord]) -> ChainBreak:
    prev = before[-1] if before else None
    expected = 1 if prev is None else prev.seq + 1
    if record.seq < expected:
        return _out_of_order(record, expected)
    if record.seq > expected:
        missing = f"{expected}" if record.seq == expected + 1 else f"{expected} to {record.seq - 1}"
        return ChainBreak(expected, BreakKind.DELETED, f"record {missing} is missing (seq jumps to {record.seq})")
    return _linked_wrongly(before, record, ahead) or _fields_wrong(before, record, ahead)


def _out_of_order(record: AuditRecord, expected: int) -> ChainBreak:
    if record.seq == expected - 1:
        return ChainBreak(record.seq, BreakKind.INSERTED, f"seq {record.seq} appears twice")
    return ChainBreak(record.seq, BreakKind.REORDERED, f"record {record.seq} comes after record {expected - 1}")


def _linked_wrongly(
    before: Sequence[AuditRecord], record: AuditRecord, ahead: Sequence[AuditRecord]
) -> ChainBreak | None:
    """The record links to another record than the one before it (or is skipped by its successor)."""
    prev = before[-1] if before else None
    expected_prev = GENESIS_HASH if prev is None else prev.hash
    seq = record.seq
    if record.prev_hash != expected_prev:
        if any(record.prev_hash == later.hash for later in ahead):
            return ChainBreak(seq, BreakKind.REORDERED, f"record {seq} links to a record that comes after it")
        for index in range(len(before) - 2, -1, -1):
            if record.prev_hash == before[index].hash:
                first = before[index + 1].seq
                return ChainBreak(first, BreakKind.INSERTED, f"record {seq} links past {first}: {first} was inserted")
    if ahead and ahead[0].prev_hash == expected_prev:
        return ChainBreak(seq, BreakKind.INSERTED, f"record {seq + 1} links past {seq}: {seq} was inserted")
    if record.prev_hash != expected_prev and record.recomputed() == record.hash and prev is not None:
        return ChainBreak(
            prev.seq,
            BreakKind.CHANGED,
            f"record {seq} does not link to record {prev.seq}: it was changed and re-hashed",
        )
    return None


def _fields_wrong(before: Sequence[AuditRecord], record: AuditRecord, ahead: Sequence[AuditRecord]) -> ChainBreak:
    """The record's fields do not give its hash: renumbered, moved, or changed."""
    seq = record.seq
    for shift in range(1, WINDOW + 1):
        if _hash_at(record, seq + shift, record.prev_hash) == record.hash:
            return ChainBreak(
                seq, BreakKind.DELETED, f"record {seq} was renumbered from {seq + shift}: records deleted"
            )
        if seq - shift >= 1 and _hash_at(record, seq - shift, record.prev_hash) == record.hash:
            first = seq - shift
            return ChainBreak(first, BreakKind.INSERTED, f"record {seq} was renumbered from {first}: records inserted")
    for other in (*before, *ahead):
        if _hash_at(record, other.seq, other.prev_hash) == other.hash:
            return ChainBreak(seq, BreakKind.REORDERED, f"the fields of record {seq} belong at record {other.seq}")
    return ChainBreak(seq, BreakKind.CHANGED, f"record {seq} was changed: its fields do not give its hash")
