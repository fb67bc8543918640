"""The revocation log store contract (broker.tokens.revocation) on memory, a SQLite file and a real PostgreSQL:
sequence numbers, reads, snapshots, releases, pruning and the horizon, the feed's name, the change topic."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from broker.events import Change
from broker.events.revocations import (
    ExceptionWithdrawn,
    KeyRevoked,
    LogEntry,
    RevocationEvent,
    SubjectPattern,
    SubjectQuarantined,
    SubjectReleased,
    TokenRevoked,
)
from broker.events.topics import REVOCATIONS
from broker.store import Store, latest_version, open_store
from broker.store.memory import MemoryStore
from broker.tokens.revocation import LogAhead, LogBehind
from tests.postgres import PostgresCluster
from tests.unit.store.conftest import OpenReplica
from tests.unit.store.helpers import T0

HOUR = timedelta(hours=1)
WEB = SubjectPattern.parse("spiffe://example.org/web")
TEAM = SubjectPattern.parse("spiffe://example.org/team/*")
EVERYONE = SubjectPattern.parse("spiffe://example.org/*", all_of_trust_domain=True)


def revoked(jti: str, hours: float = 1) -> TokenRevoked:
    return TokenRevoked(jti, T0 + hours * HOUR)


def quarantined(pattern: SubjectPattern = TEAM, *, until: float | None = None, cutoff: float = 1,
                reason: str = "leaked key") -> SubjectQuarantined:  # fmt: skip
    return SubjectQuarantined(pattern, T0, None if until is None else T0 + until * HOUR, T0 + cutoff * HOUR, reason)


def released(pattern: SubjectPattern = TEAM, minutes: int = 10) -> SubjectReleased:
    return SubjectReleased(pattern, T0 + timedelta(minutes=minutes))


def withdrawn(name: str = "stripe-payments", *, minutes: int = 10, kept: float = 2) -> ExceptionWithdrawn:
    return ExceptionWithdrawn(name, T0 + timedelta(minutes=minutes, microseconds=7), T0 + kept * HOUR)


def seqs(entries: tuple[LogEntry, ...]) -> list[int]:
    return [e.seq for e in entries]


async def test_an_empty_log_reads_empty_at_head_0(store: Store) -> None:
    page = await store.revocations.read(0)
    assert (page.entries, page.head, page.horizon) == ((), 0, 0)
    assert len(page.feed_id) >= 16


async def test_append_numbers_entries_1_2_3_in_order_and_gives_back_exactly_what_was_appended(store: Store) -> None:
    events: list[RevocationEvent] = [
        revoked("j1"),
        KeyRevoked("kid-1", T0 + 2 * HOUR),
        quarantined(EVERYONE, until=3, reason="incident 42: é"),
        released(EVERYONE),
    ]
    appended = await store.revocations.append(events[:1])
    appended += await store.revocations.append(events[1:])
    assert appended == tuple(LogEntry(i, e) for i, e in enumerate(events, 1))
    page = await store.revocations.read(0)
    assert page.entries == appended  # microseconds, patterns and the quarantine's reason come back as given
    assert page.head == 4


async def test_an_empty_append_writes_and_bumps_nothing(store: Store) -> None:
    subscription = store.changes.subscribe(REVOCATIONS)
    start = await anext(subscription)
    assert await store.revocations.append([]) == ()
    assert (await store.revocations.read(0)).head == 0
    assert await store.changes.publish(REVOCATIONS) == start.version + 1


async def test_read_pages_by_after_and_limit(store: Store) -> None:
    await store.revocations.append([revoked(f"j{i}") for i in range(1, 8)])
    assert seqs((await store.revocations.read(0, limit=3)).entries) == [1, 2, 3]
    page = await store.revocations.read(3, limit=3)
    assert (seqs(page.entries), page.head) == ([4, 5, 6], 7)
    assert seqs((await store.revocations.read(6)).entries) == [7]
    assert (await store.revocations.read(7)).entries == ()


@pytest.mark.parametrize(
    ("after", "limit"), [(-1, 10), (0, 0), (0, -5)], ids=["negative-after", "limit-0", "neg-limit"]
)
async def test_read_refuses_a_negative_after_or_a_limit_below_1(store: Store, after: int, limit: int) -> None:
    with pytest.raises(ValueError, match="at least"):
        await store.revocations.read(after, limit=limit)


async def test_read_beyond_the_head_is_log_ahead(store: Store) -> None:
    with pytest.raises(LogAhead, match="beyond"):
        await store.revocations.read(1)
    await store.revocations.append([revoked("j1")])
    assert (await store.revocations.read(1)).entries == ()
    with pytest.raises(LogAhead):
        await store.revocations.read(2)


async def test_prune_drops_what_no_longer_cuts_off_and_raises_the_horizon_to_the_highest_seq_pruned(
    store: Store,
) -> None:
    await store.revocations.append([revoked("j1", 1), quarantined(WEB), revoked("j3", 2), revoked("j4", 5)])
    assert await store.revocations.prune(T0 + 2 * HOUR) == 2  # j1 and j3; the quarantine holds until released
    page = await store.revocations.read(3)
    assert (seqs(page.entries), page.head, page.horizon) == ([4], 4, 3)
    for behind in (0, 2):
        with pytest.raises(LogBehind, match="snapshot"):
            await store.revocations.read(behind)
    assert await store.revocations.prune(T0 + 2 * HOUR) == 0
    assert (await store.revocations.read(3)).horizon == 3


async def test_a_snapshot_after_prune_holds_every_live_entry_with_the_head_and_horizon(store: Store) -> None:
    await store.revocations.append([revoked("j1", 1), quarantined(WEB), revoked("j3", 2), KeyRevoked("k", T0)])
    await store.revocations.prune(T0 + 1 * HOUR)
    snapshot = await store.revocations.snapshot(T0 + 1 * HOUR)
    assert (seqs(snapshot.entries), snapshot.head, snapshot.horizon) == ([2, 3], 4, 4)
    assert snapshot.feed_id == (await store.revocations.read(4)).feed_id
    assert seqs((await store.revocations.snapshot(T0 + 2 * HOUR)).entries) == [2]  # j3 expires exactly then


async def test_pruning_the_newest_entries_never_hands_their_numbers_out_again(store: Store) -> None:
    await store.revocations.append([revoked("j1"), revoked("j2")])
    assert await store.revocations.prune(T0 + 2 * HOUR) == 2
    page = await store.revocations.read(2)
    assert (page.entries, page.head, page.horizon) == ((), 2, 2)
    (entry,) = await store.revocations.append([revoked("j3", 3)])
    assert entry.seq == 3
    assert seqs((await store.revocations.read(2)).entries) == [3]


async def test_a_release_ends_the_quarantine_but_keeps_its_cutoff_until_the_cutoff_passes(store: Store) -> None:
    await store.revocations.append([quarantined(TEAM, cutoff=2), quarantined(WEB, cutoff=2)])
    (release,) = await store.revocations.append([released(TEAM)])
    assert release.seq == 3
    assert await store.revocations.prune(T0 + 1 * HOUR) == 0  # the cutoff and the release are still needed
    assert seqs((await store.revocations.snapshot(T0 + 1 * HOUR)).entries) == [1, 2, 3]
    assert await store.revocations.prune(T0 + 2 * HOUR) == 2  # TEAM's quarantine and its release
    snapshot = await store.revocations.snapshot(T0 + 2 * HOUR)
    assert (seqs(snapshot.entries), snapshot.horizon) == ([2], 3)  # WEB was not released


async def test_a_release_is_kept_as_long_as_the_latest_cutoff_it_ended(store: Store) -> None:
    await store.revocations.append([quarantined(TEAM, cutoff=1), quarantined(TEAM, cutoff=3), released(TEAM)])
    assert await store.revocations.prune(T0 + 2 * HOUR) == 1  # the first quarantine's cutoff has passed
    assert seqs((await store.revocations.snapshot(T0 + 2 * HOUR)).entries) == [2, 3]
    assert await store.revocations.prune(T0 + 3 * HOUR) == 2


async def test_a_release_ends_a_quarantine_appended_earlier_in_the_same_batch_but_not_a_later_one(
    store: Store,
) -> None:
    await store.revocations.append([quarantined(TEAM), released(TEAM), quarantined(TEAM, cutoff=5)])
    assert await store.revocations.prune(T0 + 2 * HOUR) == 2
    assert seqs((await store.revocations.snapshot(T0 + 9 * HOUR)).entries) == [3]  # held until released


async def test_a_quarantine_with_an_end_is_kept_until_its_end_or_its_cutoff_whichever_is_later(store: Store) -> None:
    await store.revocations.append([quarantined(WEB, until=3, cutoff=1), quarantined(TEAM, until=1, cutoff=2)])
    assert await store.revocations.prune(T0 + 2 * HOUR) == 1
    assert seqs((await store.revocations.snapshot(T0 + 2 * HOUR)).entries) == [1]


async def test_an_exception_withdrawal_reads_back_as_appended_and_is_kept_until_its_until(store: Store) -> None:
    events: list[RevocationEvent] = [revoked("j1", 1), withdrawn(kept=2), withdrawn("partner-feed", kept=3)]
    appended = await store.revocations.append(events)
    assert appended == tuple(LogEntry(i, e) for i, e in enumerate(events, 1))
    assert (await store.revocations.read(0)).entries == appended  # name, at and until to the microsecond
    assert (await store.revocations.snapshot(T0 + 1 * HOUR)).entries == appended[1:]
    assert await store.revocations.prune(T0 + 2 * HOUR) == 2  # j1 and the first withdrawal, exactly at its until
    snapshot = await store.revocations.snapshot(T0 + 2 * HOUR)
    assert (seqs(snapshot.entries), snapshot.horizon) == ([3], 2)
    assert await store.revocations.prune(T0 + 3 * HOUR) == 1


async def test_naive_times_are_refused_and_nothing_is_appended(store: Store) -> None:
    naive = TokenRevoked("j2", T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.revocations.append([revoked("j1"), naive])
    assert (await store.revocations.read(0)).head == 0
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.revocations.snapshot(T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.revocations.prune(T0.replace(tzinfo=None))


async def test_append_bumps_the_revocations_topic_and_wakes_a_subscriber_on_another_handle(
    open_replica: OpenReplica,
) -> None:
    writer, follower = await open_replica(), await open_replica()
    subscription = follower.changes.subscribe(REVOCATIONS)
    start = await asyncio.wait_for(anext(subscription), 2)
    assert start == Change(REVOCATIONS, 0, resync=True)
    await writer.revocations.append([revoked("j1"), revoked("j2")])  # one append, one bump
    assert await asyncio.wait_for(anext(subscription), 2) == Change(REVOCATIONS, 1)
    assert seqs((await follower.revocations.read(0)).entries) == [1, 2]


async def test_the_feed_id_is_the_stores_own_and_the_same_from_every_handle(open_replica: OpenReplica) -> None:
    first = await open_replica()
    feed_id = (await first.revocations.read(0)).feed_id
    await first.revocations.append([revoked("j1")])
    await first.revocations.prune(T0 + 9 * HOUR)
    assert (await (await open_replica()).revocations.snapshot(T0)).feed_id == feed_id


async def test_the_feed_id_survives_a_reopen_and_differs_for_a_new_store(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    urls = [f"sqlite://{tmp_path}/a.db", f"sqlite://{tmp_path}/b.db"]
    urls += [postgres_cluster.url(postgres_cluster.create_database()) for _ in range(2)]
    feed_ids: list[str] = []
    for url in urls:
        seen = set()
        for _ in range(2):
            store = await open_store(url)
            try:
                seen.add((await store.revocations.read(0)).feed_id)
            finally:
                await store.close()
        assert len(seen) == 1, url
        feed_ids += seen
    twins = [MemoryStore(latest_version()) for _ in range(2)]
    feed_ids += [(await twin.revocations.read(0)).feed_id for twin in twins]
    assert len(set(feed_ids)) == len(feed_ids) == 6
