"""The hash chain's two ways of linking records: one record object at a time, or a batch of rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.audit.journal import (
    GENESIS_HASH,
    AuditRecord,
    chain_hash,
    chained_rows,
    check_stamped,
    epoch_micros,
    link,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
TAIL = AuditRecord(41, T0, "e", b"x", GENESIS_HASH, b"\x07" * 32)
ENTRIES = [("token.issued", T0, b'{"a":1}'), ("token.refused", T0 + timedelta(microseconds=7), b"{}"),
           ("token.issued", T0 - timedelta(days=20_000), b"")]  # fmt: skip


@pytest.mark.parametrize("tail", [None, TAIL], ids=["empty", "after"])
def test_a_batch_of_rows_is_the_chain_link_makes(tail: AuditRecord | None) -> None:
    records = link(tail, ENTRIES)
    stamped = [(event, epoch_micros(at), body) for event, at, body in ENTRIES]
    rows = chained_rows(None if tail is None else (tail.seq, tail.hash), stamped)
    assert rows == [(r.seq, epoch_micros(r.at), r.event, r.body, r.prev_hash, r.hash) for r in records]
    assert all(r.hash == chain_hash(r.prev_hash, r.seq, r.at, r.event, r.body) for r in records)


def test_a_batch_with_a_bad_event_name_is_refused() -> None:
    with pytest.raises(ValueError, match="event name"):
        check_stamped([("token.issued", 0, b""), ("bad name\n", 0, b"")])
