"""The group-commit writer: batches by window and size, bounded queue that refuses, ordered retries, clean drain."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from broker._backoff import Backoff
from broker._batch import BatchWriter
from broker.errors import StoreUnavailableError

NO_WAIT = Backoff(initial=0.001, maximum=0.001)


class Sink:
    """A store that records each batch; ``fail`` makes the next N writes raise."""

    def __init__(self, fail: int = 0) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail
        self.attempts = 0
        self.gate: asyncio.Event | None = None

    async def write(self, batch: Sequence[int]) -> None:
        self.attempts += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise StoreUnavailableError("the store is down")
        self.batches.append(list(batch))

    @property
    def items(self) -> list[int]:
        return [i for b in self.batches for i in b]


def writer(sink: Sink, **kwargs: float) -> BatchWriter[int]:
    options: dict[str, float] = {"batch_window": 0.02, "batch_max": 4, "capacity": 8} | kwargs
    return BatchWriter(
        sink.write,
        name="test",
        batch_window=options["batch_window"],
        batch_max=int(options["batch_max"]),
        capacity=int(options["capacity"]),
        backoff=NO_WAIT,
    )


async def test_items_submitted_within_one_window_go_in_one_write() -> None:
    sink = Sink()
    async with writer(sink, batch_window=0.05) as w:
        assert all(w.submit(i) for i in range(3))
        await asyncio.sleep(0.01)
        assert sink.batches == []  # the window has not passed: nothing written yet
        await asyncio.sleep(0.1)
        assert sink.batches == [[0, 1, 2]]


async def test_a_full_batch_is_written_without_waiting_for_the_window() -> None:
    sink = Sink()
    async with writer(sink, batch_window=10.0) as w:
        for i in range(4):
            w.submit(i)
        await asyncio.sleep(0.05)
        assert sink.batches == [[0, 1, 2, 3]]
        w.submit(4)
        await asyncio.sleep(0.05)
        assert sink.batches == [[0, 1, 2, 3]]  # one item waits out its window


async def test_submit_refuses_when_the_queue_is_full_and_keeps_nothing() -> None:
    sink = Sink()
    sink.gate = asyncio.Event()  # the store hangs
    w = writer(sink, batch_window=0.0)
    w.start()
    accepted = [w.submit(i) for i in range(10)]
    assert accepted == [True] * 8 + [False] * 2
    assert (w.pending, w.refused, w.has_room()) == (8, 2, False)
    sink.gate.set()
    await w.close()
    assert sink.items == list(range(8))


async def test_a_failed_write_is_retried_in_order_and_nothing_is_lost() -> None:
    sink = Sink(fail=3)
    async with writer(sink, batch_window=0.0, capacity=16) as w:
        for i in range(10):
            assert w.submit(i)
            await asyncio.sleep(0)
        await w.flush()
    assert sink.items == list(range(10))
    assert sink.attempts == len(sink.batches) + 3


async def test_flush_returns_once_everything_before_it_is_written() -> None:
    sink = Sink()
    async with writer(sink, batch_window=10.0) as w:
        w.submit(1)
        w.submit(2)
        await asyncio.wait_for(w.flush(), 1.0)  # does not wait out the 10 s window
        assert sink.items == [1, 2]
        assert w.written == 2


async def test_flush_with_nothing_pending_returns_at_once() -> None:
    sink = Sink()
    w = writer(sink)
    await asyncio.wait_for(w.flush(), 0.1)
    assert sink.attempts == 0


async def test_close_drains_the_queue_then_refuses_new_items() -> None:
    sink = Sink(fail=2)
    w = writer(sink, batch_window=10.0)
    for i in range(6):
        w.submit(i)  # never started: close starts the writer to drain
    assert await w.close() == 0
    assert sink.items == list(range(6))
    assert w.submit(7) is False


async def test_close_with_a_timeout_reports_what_it_could_not_write(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()
    sink.gate = asyncio.Event()
    w = writer(sink, batch_window=0.0)
    for i in range(5):
        w.submit(i)
    assert await w.close(timeout=0.05) == 5
    assert "closed with 5 items not written" in caplog.text


async def test_a_failure_is_logged_without_the_items(caplog: pytest.LogCaptureFixture) -> None:
    async def write(batch: Sequence[str]) -> None:
        raise ValueError(f"cannot write {batch}")

    w: BatchWriter[str] = BatchWriter(write, name="secrets", batch_window=0.0, backoff=NO_WAIT)
    w.submit("the-item-text")
    await w.close(timeout=0.05)
    assert "ValueError" in caplog.text
    assert "the-item-text" not in caplog.text


@pytest.mark.parametrize(
    ("window", "batch_max", "capacity"), [(-1.0, 4, 8), (0.1, 0, 8), (0.1, 8, 4)], ids=["window", "max", "capacity"]
)
def test_nonsense_settings_are_refused(window: float, batch_max: int, capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity >= batch_max"):
        BatchWriter(Sink().write, name="x", batch_window=window, batch_max=batch_max, capacity=capacity)
