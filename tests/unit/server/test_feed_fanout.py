"""The feed's broadcaster against the in-memory log, with transports that record what they are given."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from broker.errors import StoreUnavailableError
from broker.server.feed_fanout import FAN_OUT_BATCH, Broadcaster, Follower
from broker.store import latest_version
from broker.store.memory import MemoryStore
from tests.unit.server.feed_helpers import revoked, until


class RecordingTransport:
    """What the broadcaster uses of an asyncio transport; ``backlog`` is the unsent bytes it reports."""

    def __init__(self, backlog: int = 0) -> None:
        self.writes: list[bytes] = []
        self.backlog = backlog
        self.closing = False
        self.aborted = False

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.backlog

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def abort(self) -> None:
        self.aborted = self.closing = True


def attach(broadcaster: Broadcaster, transport: RecordingTransport, *, not_after: float = float("inf")) -> Follower:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    transport_any: Any = transport
    follower = Follower(transport_any, True, done, "spiffe://example.org/f", not_after)
    assert broadcaster.attach(follower, broadcaster.head)
    return follower


async def started(store: MemoryStore, **options: Any) -> Broadcaster:
    broadcaster = Broadcaster(store.revocations, store.changes, **options)
    await broadcaster.start()
    return broadcaster


async def test_each_entry_is_read_once_and_the_same_bytes_object_goes_to_every_follower() -> None:
    store = MemoryStore(latest_version())
    broadcaster = await started(store)
    reads = 0
    read = store.revocations.read

    async def counting(after: int, *, limit: int = 1000) -> Any:
        nonlocal reads
        reads += 1
        return await read(after, limit=limit)

    store.revocations.read = counting  # type: ignore[method-assign]
    transports = [RecordingTransport() for _ in range(50)]
    for transport in transports:
        attach(broadcaster, transport)

    await store.revocations.append(revoked(1))
    await until(lambda: all(t.writes for t in transports))

    assert reads == 1
    assert len({id(t.writes[0]) for t in transports}) == 1
    size, _, rest = transports[0].writes[0].partition(b"\r\n")  # a chunk of Transfer-Encoding: chunked
    assert int(size, 16) == len(rest) - 2 and rest.startswith(b"id: 1\nevent: token.revoked\n")
    await broadcaster.stop()


async def test_a_follower_with_too_many_unsent_bytes_is_dropped_and_the_others_are_not() -> None:
    store = MemoryStore(latest_version())
    broadcaster = await started(store, max_buffer=4096)
    slow, fine = RecordingTransport(backlog=10_000), RecordingTransport()
    slow_follower, fine_follower = attach(broadcaster, slow), attach(broadcaster, fine)

    await store.revocations.append(revoked(1))
    await until(lambda: bool(fine.writes))

    assert slow.aborted and not slow.writes
    assert slow_follower.done.done() and not fine_follower.done.done()
    assert len(broadcaster) == 1 and broadcaster.dropped_slow == 1
    await broadcaster.stop()


async def test_closed_connections_and_expired_svids_are_swept_by_the_one_tick() -> None:
    store = MemoryStore(latest_version())
    broadcaster = await started(store, heartbeat=60.0, sweep_interval=0.02)
    gone, expired, live = RecordingTransport(), RecordingTransport(), RecordingTransport()
    followers = [attach(broadcaster, gone), attach(broadcaster, expired, not_after=time.time() + 0.05),
                 attach(broadcaster, live)]  # fmt: skip
    gone.closing = True

    await until(lambda: len(broadcaster) == 1)

    assert [f.done.done() for f in followers] == [True, True, False]
    assert not live.writes  # no heartbeat yet, and a sweep writes nothing
    await broadcaster.stop()
    assert followers[2].done.done()


async def test_one_heartbeat_is_rendered_for_every_follower() -> None:
    store = MemoryStore(latest_version())
    broadcaster = await started(store, heartbeat=0.02, sweep_interval=0.02)
    transports = [RecordingTransport() for _ in range(3)]
    for transport in transports:
        attach(broadcaster, transport)

    await until(lambda: all(t.writes for t in transports))

    assert b": heartbeat 0\n\n" in transports[0].writes[0]
    assert len({id(t.writes[0]) for t in transports}) == 1
    await broadcaster.stop()


async def test_the_ring_is_filled_at_start_so_resuming_followers_need_no_store_read() -> None:
    store = MemoryStore(latest_version())
    await store.revocations.append(revoked(10))
    broadcaster = await started(store, ring_size=16)

    frames = broadcaster.frames_after(4)

    assert frames is not None and len(frames) == 6
    assert b"id: 5\n" in frames[0].raw
    assert broadcaster.covers(0) and broadcaster.covers(10)
    await broadcaster.stop()


async def test_a_follower_behind_a_small_ring_is_not_covered() -> None:
    store = MemoryStore(latest_version())
    await store.revocations.append(revoked(40))
    broadcaster = await started(store, ring_size=16)

    assert broadcaster.frames_after(10) is None
    assert not broadcaster.covers(10)
    assert broadcaster.covers(30)
    await broadcaster.stop()


async def test_snapshots_are_rendered_once_per_head_however_many_followers_ask_at_once() -> None:
    store = MemoryStore(latest_version())
    await store.revocations.append(revoked(3))
    broadcaster = await started(store)
    taken = 0
    snapshot = store.revocations.snapshot

    async def counting(now: Any) -> Any:
        nonlocal taken
        taken += 1
        await asyncio.sleep(0.01)
        return await snapshot(now)

    store.revocations.snapshot = counting  # type: ignore[method-assign]
    await store.revocations.append(revoked(1))
    await until(lambda: broadcaster.head == 4)

    results = await asyncio.gather(*(broadcaster.snapshot() for _ in range(100)))
    again = await broadcaster.snapshot()

    assert taken == 1
    assert {r.head for r in results} == {4} and again is results[0]
    assert all(r.frame is results[0].frame for r in results)
    await broadcaster.stop()


async def test_the_entries_of_one_read_go_out_as_one_write_per_follower_in_order() -> None:
    store = MemoryStore(latest_version())
    broadcaster = await started(store)
    transport = RecordingTransport()
    attach(broadcaster, transport)

    await store.revocations.append(revoked(300))
    await until(lambda: bool(transport.writes))

    assert len(transport.writes) == 1
    ids = [int(line[4:]) for line in transport.writes[0].split(b"\n") if line.startswith(b"id: ")]
    assert ids == list(range(1, 301))
    await broadcaster.stop()


async def test_a_large_fan_out_lets_other_work_run_between_batches() -> None:
    store = MemoryStore(latest_version())
    broadcaster = await started(store)
    transports = [RecordingTransport() for _ in range(FAN_OUT_BATCH * 4)]
    for transport in transports:
        attach(broadcaster, transport)
    progress: list[int] = []

    async def other_request() -> None:  # followers are a set: any of them may be written last
        while not all(t.writes for t in transports):
            progress.append(sum(1 for t in transports if t.writes))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(other_request())
    await store.revocations.append(revoked(1))
    await until(lambda: all(t.writes for t in transports))
    await watcher

    assert any(0 < done < len(transports) for done in progress)  # it ran while the fan-out was half done
    await broadcaster.stop()


async def test_no_heartbeat_goes_out_while_the_store_does_not_answer_and_they_resume_when_it_does() -> None:
    store = MemoryStore(latest_version())
    broadcaster = await started(store, heartbeat=0.02, sweep_interval=0.02)
    read, down = store.revocations.read, True

    async def failing(after: int, *, limit: int = 1000) -> Any:
        if down:
            raise StoreUnavailableError("state store unavailable; retry later")
        return await read(after, limit=limit)

    store.revocations.read = failing  # type: ignore[method-assign]
    transport = RecordingTransport()
    attach(broadcaster, transport)
    await asyncio.sleep(0.2)  # ten heartbeat intervals
    assert transport.writes == []  # its followers go stale rather than trust a frozen view
    down = False
    await until(lambda: bool(transport.writes))
    assert transport.writes[0].endswith(b": heartbeat 0\n\n\r\n")
    await broadcaster.stop()


async def test_a_follower_attaching_while_the_ring_is_refilled_sees_the_old_ring_or_the_whole_new_one() -> None:
    store = MemoryStore(latest_version())
    await store.revocations.append(revoked(3))
    broadcaster = await started(store, ring_size=16)
    await store.revocations.append(revoked(20))
    read, gate = store.revocations.read, asyncio.Event()

    async def slow(after: int, *, limit: int = 1000) -> Any:
        page = await read(after, limit=min(limit, 5))  # the refill takes several reads
        await gate.wait()
        return page

    store.revocations.read = slow  # type: ignore[method-assign]
    restart = asyncio.create_task(broadcaster._restart())
    await asyncio.sleep(0.05)  # the refill is under way, blocked in its first read
    assert broadcaster.head == 3 and broadcaster.frames_after(2) is not None  # still the old ring and head
    gate.set()
    await restart
    frames = broadcaster.frames_after(7)
    assert broadcaster.head == 23 and frames is not None and len(frames) == 16  # seq 8-23, all of them
    assert broadcaster.frames_after(3) is None  # further back than the ring: a snapshot, never a partial ring
    await broadcaster.stop()
