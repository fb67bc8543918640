"""The replica's client registry view over a faithful registry double and the in-memory change feed: it follows
the ``clients`` topic, re-reads on its own, and fails closed once unconfirmed for ``max_unconfirmed`` seconds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from broker.errors import StoreUnavailableError
from broker.server.client_registry import ClientRegistryUnavailableError, ClientRegistryView
from broker.store.memory.changes import MemoryChangeFeed
from broker.testing import ManualClock
from tests.unit.server.feed_helpers import until
from tests.unit.tokens.client_registry_fake import T0, FakeClientRegistry, inline_client


@pytest.fixture
def changes() -> MemoryChangeFeed:
    return MemoryChangeFeed()


@pytest.fixture
async def registry(changes: MemoryChangeFeed) -> FakeClientRegistry:
    registry = FakeClientRegistry(changes)
    await registry.add(inline_client("billing"))
    return registry


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
async def view(registry: FakeClientRegistry, changes: MemoryChangeFeed, clock: ManualClock) -> ClientRegistryView:
    return await ClientRegistryView.open(registry, changes, clock=clock, max_unconfirmed=60)


@contextlib.asynccontextmanager
async def following(view: ClientRegistryView, *, maintain: bool = False) -> AsyncIterator[None]:
    task = asyncio.create_task(view.run() if maintain else view.follow())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_open_reads_every_client(view: ClientRegistryView, registry: FakeClientRegistry) -> None:
    assert view.get("billing") == registry.clients["billing"] and view.get("nobody") is None
    assert len(view) == 1 and view.problem() is None


async def test_a_view_never_read_refuses(registry: FakeClientRegistry, changes: MemoryChangeFeed) -> None:
    view = ClientRegistryView(registry, changes)
    with pytest.raises(ClientRegistryUnavailableError, match="has not been read yet"):
        view.get("billing")


async def test_a_store_that_cannot_be_read_fails_the_open(
    registry: FakeClientRegistry, changes: MemoryChangeFeed
) -> None:
    registry.failing = True
    with pytest.raises(StoreUnavailableError):
        await ClientRegistryView.open(registry, changes)


async def test_changes_made_elsewhere_are_followed(view: ClientRegistryView, registry: FakeClientRegistry) -> None:
    async with following(view):
        await registry.add(inline_client("payroll"))
        await until(lambda: view.get("payroll") is not None)
        await registry.set_disabled("billing", True, at=T0)
        await until(lambda: (client := view.get("billing")) is not None and client.disabled)
        await registry.remove("payroll")
        await until(lambda: view.get("payroll") is None)


async def test_a_failed_read_is_logged_and_the_next_change_is_followed(
    view: ClientRegistryView, registry: FakeClientRegistry, changes: MemoryChangeFeed, caplog: pytest.LogCaptureFixture
) -> None:
    async with following(view):
        await until(lambda: view.reads >= 2)  # the subscription's first (resync) change
        registry.failing = True
        changes.bump("clients")
        await until(lambda: "client registry read failed" in caplog.text)
        registry.failing = False
        await registry.add(inline_client("payroll"))
        await until(lambda: view.get("payroll") is not None)


async def test_a_short_outage_keeps_the_last_view_and_a_long_one_fails_closed(
    view: ClientRegistryView, registry: FakeClientRegistry, clock: ManualClock
) -> None:
    registry.failing = True
    clock.advance(59)
    with pytest.raises(StoreUnavailableError):
        await view.reload()
    assert view.get("billing") is not None
    clock.advance(2)
    with pytest.raises(ClientRegistryUnavailableError, match="not been confirmed against the store for over 60 s"):
        view.get("billing")
    assert view.problem() is not None
    registry.failing = False
    await view.reload()
    assert view.get("billing") is not None and view.problem() is None


async def test_maintain_confirms_and_picks_up_a_change_whose_event_was_lost(
    registry: FakeClientRegistry, changes: MemoryChangeFeed, clock: ManualClock
) -> None:
    view = await ClientRegistryView.open(registry, changes, clock=clock, confirm_interval=0.01)
    async with following(view, maintain=True):
        registry.clients["billing"] = replace(registry.clients["billing"], disabled=True)  # no change event
        await until(lambda: (client := view.get("billing")) is not None and client.disabled)
        clock.advance(3600)
        await until(lambda: view.problem() is None)
