"""The in-process fan-out every change feed shares: initial resync, coalescing, resync on demand, closing."""

from __future__ import annotations

import asyncio
import gc

import pytest

from broker.errors import StoreError
from broker.events import Change, ChangeHub, Subscription, check_topic

QUIET_S = 0.05


async def next_change(subscription: Subscription) -> Change:
    return await asyncio.wait_for(anext(subscription), 1.0)


async def assert_quiet(subscription: Subscription) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(subscription), QUIET_S)


def ready_hub(**counters: int) -> ChangeHub:
    hub = ChangeHub("memory:")
    hub.counters_read(counters)
    return hub


async def test_nothing_is_delivered_before_the_first_full_read() -> None:
    hub = ChangeHub("memory:")
    subscription = hub.subscribe("keyring")
    hub.seen("keyring", 3)  # a notification before the counters were read
    await assert_quiet(subscription)
    hub.counters_read({"keyring": 4})
    assert await next_change(subscription) == Change("keyring", 4, resync=True)


async def test_first_change_is_a_resync_at_the_current_version() -> None:
    hub = ready_hub(keyring=7)
    subscription = hub.subscribe("keyring")
    assert await next_change(subscription) == Change("keyring", 7, resync=True)
    await assert_quiet(subscription)


async def test_a_topic_never_bumped_starts_at_version_zero() -> None:
    subscription = ready_hub(keyring=7).subscribe("revocations")
    assert await next_change(subscription) == Change("revocations", 0, resync=True)


async def test_slow_reader_sees_the_latest_version_once() -> None:
    hub = ready_hub(keyring=1)
    subscription = hub.subscribe("keyring")
    await next_change(subscription)
    for version in range(2, 1002):
        hub.seen("keyring", version)
    assert await next_change(subscription) == Change("keyring", 1001)
    await assert_quiet(subscription)


async def test_repeated_or_late_notification_does_not_wake() -> None:
    hub = ready_hub(keyring=5)
    subscription = hub.subscribe("keyring")
    await next_change(subscription)
    hub.seen("keyring", 5)
    hub.seen("keyring", 4)
    hub.counters_read({"keyring": 5})
    await assert_quiet(subscription)


async def test_other_topics_do_not_wake_a_subscriber() -> None:
    hub = ready_hub(keyring=1, revocations=1)
    subscription = hub.subscribe("keyring")
    await next_change(subscription)
    hub.seen("revocations", 2)
    hub.counters_read({"revocations": 3, "keyring": 1})
    await assert_quiet(subscription)


async def test_full_read_with_a_higher_version_wakes_without_resync() -> None:
    hub = ready_hub(keyring=1)
    subscription = hub.subscribe("keyring")
    await next_change(subscription)
    hub.counters_read({"keyring": 2})
    assert await next_change(subscription) == Change("keyring", 2)


async def test_counters_lower_than_seen_mean_resync() -> None:
    hub = ready_hub(keyring=9)
    subscription = hub.subscribe("keyring")
    await next_change(subscription)
    hub.counters_read({"keyring": 3})  # a store restored from a backup, or a forged notification corrected
    assert await next_change(subscription) == Change("keyring", 3, resync=True)


async def test_resync_after_reconnect_reaches_every_subscriber_even_without_a_change() -> None:
    hub = ready_hub(keyring=2, revocations=1)
    subscriptions = [hub.subscribe("keyring"), hub.subscribe("keyring"), hub.subscribe("revocations")]
    for subscription in subscriptions:
        await next_change(subscription)
    hub.resync({"keyring": 2, "revocations": 1})
    assert [await next_change(s) for s in subscriptions] == [
        Change("keyring", 2, resync=True),
        Change("keyring", 2, resync=True),
        Change("revocations", 1, resync=True),
    ]


async def test_a_change_wakes_a_reader_already_waiting() -> None:
    hub = ready_hub(keyring=1)
    subscription = hub.subscribe("keyring")
    await next_change(subscription)
    waiting = asyncio.create_task(next_change(subscription))
    await asyncio.sleep(0)
    hub.seen("keyring", 2)
    assert await waiting == Change("keyring", 2)


async def test_closing_a_subscription_ends_a_pending_iteration() -> None:
    hub = ready_hub(keyring=1)
    subscription = hub.subscribe("keyring")
    received = []

    async def follow() -> None:
        async for change in subscription:
            received.append(change)

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.01)
    subscription.close()
    await asyncio.wait_for(follower, 1.0)
    assert received == [Change("keyring", 1, resync=True)]
    assert subscription.closed
    subscription.close()  # twice is fine


async def test_closing_the_hub_ends_every_subscription_and_refuses_new_ones() -> None:
    hub = ready_hub(keyring=1)
    subscriptions = [hub.subscribe("keyring"), hub.subscribe("other")]
    hub.close()
    for subscription in subscriptions:
        with pytest.raises(StopAsyncIteration):
            await next_change(subscription)
    with pytest.raises(StoreError, match="closed"):
        hub.subscribe("keyring")


async def test_a_forgotten_subscription_is_dropped() -> None:
    hub = ready_hub(keyring=1)
    hub.subscribe("keyring")
    gc.collect()
    assert list(hub._subscribers["keyring"]) == []


@pytest.mark.parametrize("topic", ["", "Keyring", "key ring", "1keyring", "k" * 64, "keyring\n"])
def test_topic_names_are_refused_unless_plain(topic: str) -> None:
    with pytest.raises(ValueError, match="not a change topic"):
        check_topic(topic)


def test_topic_names_in_use_are_accepted() -> None:
    for topic in ("keyring", "revocations", "api_key.exceptions", "k" * 63):
        assert check_topic(topic) == topic


async def test_a_following_loop_that_dies_ends_every_subscription(caplog: pytest.LogCaptureFixture) -> None:
    hub = ChangeHub("memory:")
    subscription = hub.subscribe("keyring")

    async def broken_loop() -> None:
        raise RuntimeError("a bug")

    task = hub.follow(broken_loop(), name="test")
    await asyncio.wait({task})
    with pytest.raises(StopAsyncIteration):
        await next_change(subscription)
    assert hub.closed
    assert "the change feed of the store memory: stopped" in caplog.text


async def test_a_cancelled_following_loop_leaves_the_hub_open() -> None:
    hub = ready_hub(keyring=1)
    task = hub.follow(asyncio.sleep(10), name="test")
    task.cancel()
    await asyncio.wait({task})
    assert not hub.closed
