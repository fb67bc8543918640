"""The revocation log's ``exception.withdrawn`` entry (issue 12): its wire form, how long a store keeps it, what the
index answers, and the memory log's append, snapshot and prune of it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from broker.events.revocations import (
    ExceptionWithdrawn,
    LogEntry,
    RevocationIndex,
    entry_from_wire,
    entry_to_wire,
    kept_until,
)
from broker.store.memory.changes import MemoryChangeFeed
from broker.store.memory.revocations import MemoryRevocationLog

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def withdrawn(name: str = "stripe-payments", at: int = 0, until: int = 600) -> ExceptionWithdrawn:
    return ExceptionWithdrawn(name, T0 + timedelta(seconds=at), T0 + timedelta(seconds=until))


def test_a_withdrawal_survives_the_wire_with_whole_seconds_rounded_up() -> None:
    event = ExceptionWithdrawn("stripe-payments", T0 + timedelta(microseconds=1), T0 + timedelta(seconds=600))
    wire = entry_to_wire(LogEntry(7, event))
    assert wire == {"seq": 7, "type": "exception.withdrawn", "name": "stripe-payments",
                    "at": int(T0.timestamp()) + 1, "until": int(T0.timestamp()) + 600}  # fmt: skip
    back = entry_from_wire(json.loads(json.dumps(wire)))
    assert back == LogEntry(7, ExceptionWithdrawn("stripe-payments", T0 + timedelta(seconds=1), event.until))


@pytest.mark.parametrize(
    "wire",
    [
        {"seq": 1, "type": "exception.withdrawn", "name": "Stripe", "at": 0, "until": 1},
        {"seq": 1, "type": "exception.withdrawn", "name": "stripe", "at": 0},
        {"seq": 1, "type": "exception.withdrawn", "name": "stripe", "at": 0, "until": 1, "reason": "x"},
        {"seq": 1, "type": "exception.withdrawn", "name": 7, "at": 0, "until": 1},
        {"seq": 1, "type": "exception.withdrawn", "name": "stripe", "at": "0", "until": 1},
    ],
    ids=["upper-case-name", "no-until", "extra-member", "name-not-a-string", "time-not-a-number"],
)
def test_a_malformed_withdrawal_on_the_wire_is_a_value_error(wire: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        entry_from_wire(wire)


def test_a_store_keeps_a_withdrawal_until_its_until() -> None:
    assert kept_until(withdrawn(until=900)) == T0 + timedelta(seconds=900)


def test_the_index_answers_the_latest_withdrawal_while_it_is_kept() -> None:
    index = RevocationIndex()
    assert index.withdrawn_at("stripe-payments") is None
    index.apply(LogEntry(1, withdrawn(at=10, until=600)))
    index.apply(LogEntry(2, withdrawn(at=5, until=700)))  # an older withdrawal, appended later, changes nothing
    index.apply(LogEntry(3, withdrawn("other", at=20)))
    assert index.withdrawn_at("stripe-payments") == T0 + timedelta(seconds=10)
    index.apply(LogEntry(4, withdrawn(at=30, until=900)))
    assert index.withdrawn_at("stripe-payments") == T0 + timedelta(seconds=30)
    index.prune(T0 + timedelta(seconds=600))
    assert index.withdrawn_at("other") is None and len(index) == 1
    index.prune(T0 + timedelta(seconds=900))
    assert index.withdrawn_at("stripe-payments") is None and len(index) == 0


async def test_the_memory_log_snapshots_and_prunes_a_withdrawal_at_its_until() -> None:
    log = MemoryRevocationLog(MemoryChangeFeed())
    (entry,) = await log.append([withdrawn(until=600)])
    assert (await log.snapshot(T0 + timedelta(seconds=599))).entries == (entry,)
    assert await log.prune(T0 + timedelta(seconds=600)) == 1
    assert (await log.snapshot(T0)).entries == ()


def test_a_withdrawal_names_a_dns_label() -> None:
    with pytest.raises(ValueError, match="DNS label"):
        withdrawn("-bad-")
