"""``verify_chain`` over records in memory: each kind of break is named at the right record."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from broker.audit.journal import AuditRecord, link
from broker.audit.verify import BreakKind, Head, verify_chain
from tests.unit.store.helpers import T0


def chain(n: int = 10) -> list[AuditRecord]:
    return link(None, [("e", T0 + timedelta(seconds=i), f'{{"i":{i}}}'.encode()) for i in range(1, n + 1)])


def test_a_sound_chain_verifies_and_names_its_head() -> None:
    records = chain()
    report = verify_chain(records)
    assert report.ok and report.records == 10
    assert report.head == Head(10, records[-1].hash)


def test_an_empty_journal_verifies_with_no_head() -> None:
    report = verify_chain([])
    assert report.ok and report.head is None and report.records == 0


def test_a_repeated_seq_is_named_as_inserted() -> None:
    records = chain()
    report = verify_chain([*records[:5], records[4], *records[5:]])
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.kind) == (5, BreakKind.INSERTED)
    assert report.head == Head(5, records[4].hash) and report.records == 5


def test_a_record_out_of_order_is_named_as_reordered() -> None:
    records = chain()
    report = verify_chain([*records[:5], records[2], *records[5:]])
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.kind) == (3, BreakKind.REORDERED)


def test_a_changed_record_is_named() -> None:
    records = chain()
    records[3] = replace(records[3], body=b'{"i":999}')
    report = verify_chain(records)
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.kind) == (4, BreakKind.CHANGED)
    assert "its fields do not give its hash" in report.first_break.detail


def test_a_missing_first_record_is_named_as_deleted() -> None:
    report = verify_chain(chain()[1:])
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.kind) == (1, BreakKind.DELETED)


def test_the_recorded_head_catches_a_deleted_tail() -> None:
    records = chain()
    head = Head(10, records[-1].hash)
    assert verify_chain(records[:8]).ok  # what the chain alone cannot see
    report = verify_chain(records[:8], expect_head=head)
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.kind) == (10, BreakKind.TRUNCATED)
    assert verify_chain(records, expect_head=head).ok
    assert verify_chain([*records, *link(records[-1], [("e", T0, b"{}")])], expect_head=head).ok  # it grew


def test_the_recorded_head_catches_a_rewritten_chain() -> None:
    records = chain()
    rewritten = link(None, [(r.event, r.at, b"{}" if r.seq == 3 else r.body) for r in records])
    assert verify_chain(rewritten).ok
    report = verify_chain(rewritten, expect_head=Head(10, records[-1].hash))
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.kind) == (10, BreakKind.CHANGED)


def test_a_head_round_trips_through_its_text() -> None:
    head = Head(42, bytes(range(32)))
    assert Head.parse(str(head)) == head


@pytest.mark.parametrize("text", ["42", "x:00", "0:" + "00" * 32, "1:abc", "1:" + "00" * 31], ids=str)
def test_a_malformed_head_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="SEQ:HASH"):
        Head.parse(text)
