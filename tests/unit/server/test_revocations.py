"""Tests for broker.server.revocations: the replica's index kept in step with the store's revocation log (the
in-memory twin, which refuses what the SQL logs refuse), and what it answers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from broker.devtools.devca import DevCA
from broker.errors import StoreUnavailableError, TemporarilyUnavailableError
from broker.events.revocations import (
    KeyRevoked,
    LogEntry,
    RevocationEvent,
    SubjectPattern,
    SubjectQuarantined,
    SubjectReleased,
    TokenRevoked,
)
from broker.identity.spiffeid import SpiffeId
from broker.server.revocations import ReplicaRevocations
from broker.store import latest_version
from broker.store.memory import MemoryStore
from broker.testing import ManualClock
from broker.tokens.endpoint import QuarantinedError
from broker.tokens.issuer import AuthenticatedClient
from broker.tokens.presented import CheckedToken
from broker.tokens.revocation import LogAhead, LogPage
from tests.unit.identity.wlapi_helpers import eventually

WEB = "spiffe://example.org/ns/shop/sa/web"
OTHER = "spiffe://example.org/ns/shop/sa/other"
FOLLOW_BOUND_S = 2.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(latest_version())


def at(clock: ManualClock, offset: float = 0.0) -> datetime:
    return datetime.fromtimestamp(clock() + offset, UTC)


def token(clock: ManualClock, jti: str = "j1", subject: str = WEB, kid: str = "k1", age: float = 10) -> CheckedToken:
    issued = at(clock, -age)
    return CheckedToken(jti, kid, subject, ("https://api.example.org",), issued, issued + timedelta(seconds=60), {})


def client(spiffe_id: str) -> AuthenticatedClient:
    ca = DevCA.ephemeral("example.org")
    svid = ca.issue_x509_svid(SpiffeId.parse(spiffe_id), ttl=3600)
    return AuthenticatedClient(spiffe_id=svid.spiffe_id, leaf=svid.leaf)


def quarantine(clock: ManualClock, pattern: str = WEB, until: float | None = None) -> SubjectQuarantined:
    return SubjectQuarantined(
        SubjectPattern.parse(pattern),
        at(clock),
        None if until is None else at(clock, until),
        at(clock, 300),
        reason="suspected compromise",
    )


async def open_view(store: MemoryStore, clock: ManualClock, **options: float) -> ReplicaRevocations:
    return await ReplicaRevocations.open(store.revocations, store.changes, clock=clock, **options)


async def test_open_reads_a_snapshot_of_what_the_log_already_holds(store: MemoryStore, clock: ManualClock) -> None:
    await store.revocations.append([TokenRevoked("j1", at(clock, 60)), KeyRevoked("k9", at(clock, 60))])
    view = await open_view(store, clock)
    assert view.index.seq == 2
    assert view.refusal(token(clock)) == "revoked"
    assert view.refusal(token(clock, jti="j2", kid="k9")) == "key_revoked"
    assert view.refusal(token(clock, jti="j2")) is None


async def test_catch_up_reads_an_entry_appended_elsewhere_just_before_it(
    store: MemoryStore, clock: ManualClock
) -> None:
    view = await open_view(store, clock)
    await store.revocations.append([TokenRevoked("j1", at(clock, 60))])  # another replica, no follower running
    assert view.refusal(token(clock)) is None
    await view.catch_up()
    assert view.refusal(token(clock)) == "revoked"


async def test_catch_up_reads_the_tail_in_pages(store: MemoryStore, clock: ManualClock) -> None:
    view = ReplicaRevocations(store.revocations, store.changes, clock=clock, page_size=2)
    await view.resync()
    await store.revocations.append([TokenRevoked(f"j{n}", at(clock, 60)) for n in range(5)])
    reads = view.reads
    await view.catch_up()
    assert view.index.seq == 5 and view.reads - reads == 3


async def test_callers_waiting_for_a_read_share_one_query(store: MemoryStore, clock: ManualClock) -> None:
    view = await open_view(store, clock)
    reads = view.reads
    await asyncio.gather(*(view.catch_up() for _ in range(50)))
    assert view.reads - reads == 1


class SlowLog:
    """The twin's log whose reads wait for ``gate``: a read under way, held open by the test."""

    def __init__(self, store: MemoryStore) -> None:
        self._log = store.revocations
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def append(self, events: Sequence[RevocationEvent]) -> tuple[LogEntry, ...]:
        return await self._log.append(events)

    async def read(self, after: int, *, limit: int = 1000) -> LogPage:
        page = await self._log.read(after, limit=limit)
        self.started.set()
        await self.gate.wait()
        return page

    async def snapshot(self, now: datetime) -> LogPage:
        return await self._log.snapshot(now)

    async def prune(self, now: datetime) -> int:
        return await self._log.prune(now)


async def test_a_read_under_way_is_not_shared_with_a_caller_that_arrived_after_it_began(
    store: MemoryStore, clock: ManualClock
) -> None:
    slow = SlowLog(store)
    view = ReplicaRevocations(slow, store.changes, clock=clock)
    await view.resync()
    first = asyncio.create_task(view.catch_up())
    await slow.started.wait()  # the first read has its page: an entry appended now is not in it
    await store.revocations.append([TokenRevoked("j1", at(clock, 60))])
    second = asyncio.create_task(view.catch_up())
    slow.gate.set()
    await first
    await second
    assert view.refusal(token(clock)) == "revoked"


async def test_a_failed_read_fails_its_callers_and_the_next_call_reads_again(
    store: MemoryStore, clock: ManualClock
) -> None:
    view = await open_view(store, clock)
    real_read = store.revocations.read
    calls = 0

    async def down(after: int, *, limit: int = 1000) -> LogPage:
        nonlocal calls
        calls += 1
        raise StoreUnavailableError("store down (test)")

    store.revocations.read = down  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailableError):
        await asyncio.gather(view.catch_up(), view.catch_up())
    assert calls == 1
    store.revocations.read = real_read  # type: ignore[method-assign]
    await store.revocations.append([TokenRevoked("j1", at(clock, 60))])
    await view.catch_up()
    assert view.refusal(token(clock)) == "revoked"


async def test_a_follower_behind_the_horizon_takes_a_snapshot(store: MemoryStore, clock: ManualClock) -> None:
    view = await open_view(store, clock)
    await store.revocations.append([TokenRevoked("gone", at(clock, 1)), TokenRevoked("j1", at(clock, 60))])
    await store.revocations.prune(at(clock, 2))  # "gone" expired and was pruned before this replica read it
    reads = view.reads
    await view.catch_up()
    assert view.reads - reads == 1  # LogBehind, then one snapshot
    assert view.index.seq == 2 and view.refusal(token(clock)) == "revoked"


async def test_a_log_behind_the_replica_or_a_different_log_is_read_from_a_snapshot(
    store: MemoryStore, clock: ManualClock
) -> None:
    view = await open_view(store, clock)
    await store.revocations.append([TokenRevoked("j1", at(clock, 60))])
    await view.catch_up()
    restored = MemoryStore(latest_version())  # a store restored from an older backup: its head is below ours
    view._log = restored.revocations
    with pytest.raises(LogAhead):
        await restored.revocations.read(view.index.seq)
    await view.catch_up()
    assert view.index.seq == 0 and view.refusal(token(clock)) is None
    await restored.revocations.append([TokenRevoked("j2", at(clock, 60))])
    other = MemoryStore(latest_version())  # another log altogether (its feed_id differs)
    await other.revocations.append([TokenRevoked("j3", at(clock, 60)), TokenRevoked("j4", at(clock, 60))])
    view._log = other.revocations
    await view.catch_up()
    assert view.refusal(token(clock, jti="j3")) == "revoked"
    assert view.refusal(token(clock, jti="j2")) is None


async def test_the_follower_applies_appends_as_their_change_events_arrive(
    store: MemoryStore, clock: ManualClock
) -> None:
    view = await open_view(store, clock)
    task = asyncio.create_task(view.follow())
    try:
        await store.revocations.append([quarantine(clock)])
        await eventually(lambda: view.index.quarantine_of(WEB, at(clock)) is not None, timeout=FOLLOW_BOUND_S)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_quarantined_client_is_refused_and_a_released_one_is_not(
    store: MemoryStore, clock: ManualClock
) -> None:
    view = await open_view(store, clock)
    web, other = client(WEB), client(OTHER)
    await store.revocations.append([quarantine(clock, "spiffe://example.org/ns/shop/sa/*")])
    await view.catch_up()
    with pytest.raises(QuarantinedError) as caught:
        view.check(web)
    assert "suspected" not in caught.value.description  # the reason stays in the audit journal
    view.check(client("spiffe://example.org/ns/billing/sa/web"))
    await store.revocations.append(
        [SubjectReleased(SubjectPattern.parse("spiffe://example.org/ns/shop/sa/*"), at(clock))]
    )
    await view.catch_up()
    view.check(web)
    view.check(other)
    assert view.refusal(token(clock)) == "quarantined", "released, but tokens issued before stay revoked"


async def test_a_quarantine_with_an_end_stops_refusing_when_it_ends(store: MemoryStore, clock: ManualClock) -> None:
    view = await open_view(store, clock)
    await store.revocations.append([quarantine(clock, until=30)])
    await view.catch_up()
    with pytest.raises(QuarantinedError):
        view.check(client(WEB))
    clock.advance(31)
    view.check(client(WEB))


async def test_an_index_not_confirmed_against_the_store_for_too_long_fails_closed(
    store: MemoryStore, clock: ManualClock
) -> None:
    never_read = ReplicaRevocations(store.revocations, store.changes, clock=clock)
    with pytest.raises(TemporarilyUnavailableError, match="not been read yet"):
        never_read.check(client(WEB))
    assert never_read.problem() == "the revocation log has not been read yet"
    view = await open_view(store, clock, max_unconfirmed=60)
    clock.advance(59)
    view.check(client(WEB))  # a short outage does not stop issuance
    assert view.problem() is None
    clock.advance(2)
    with pytest.raises(TemporarilyUnavailableError, match="over 60 s"):
        view.check(client(WEB))
    await view.catch_up()
    view.check(client(WEB))


async def test_revoke_appends_once_per_jti_and_also_for_a_token_whose_subject_is_quarantined(
    store: MemoryStore, clock: ManualClock
) -> None:
    view = await open_view(store, clock)
    first, again = await asyncio.gather(view.revoke(token(clock)), view.revoke(token(clock)))
    assert sorted([first, again]) == [False, True]
    assert await view.revoke(token(clock)) is False
    await store.revocations.append([quarantine(clock, OTHER)])
    # Refused now by the quarantine, but a release must not revive it: it is revoked by jti too.
    assert await view.revoke(token(clock, jti="j3", subject=OTHER)) is True
    assert await view.revoke(token(clock, jti="j3", subject=OTHER)) is False
    page = await store.revocations.read(0)
    assert [type(e.event).__name__ for e in page.entries] == ["TokenRevoked", "SubjectQuarantined", "TokenRevoked"]
    revoked = page.entries[0].event
    assert isinstance(revoked, TokenRevoked) and revoked.expires_at == token(clock).expires_at


async def test_maintenance_prunes_the_index_and_the_store_once_entries_expire(
    store: MemoryStore, clock: ManualClock
) -> None:
    view = await open_view(store, clock)
    await store.revocations.append([TokenRevoked("j1", at(clock, 60))])
    task = asyncio.create_task(view.maintain(interval=0.01, prune_interval=0))
    try:
        await eventually(lambda: len(view.index) == 1, timeout=FOLLOW_BOUND_S)
        clock.advance(61)

        async def pruned() -> bool:
            return len(view.index) == 0 and (await store.revocations.snapshot(at(clock))).horizon == 1

        await eventually(pruned, timeout=FOLLOW_BOUND_S)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert (await store.revocations.snapshot(at(clock))).entries == ()
