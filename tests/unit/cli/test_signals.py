"""broker.cli._signals: the one stop-on-signal pair used by server, sidecar, demo-api and dev."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from broker.cli._signals import Stopped, stop_on_signals, until_stopped


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_ends_a_wait_at_once_and_cancels_what_was_awaited(sig: signal.Signals) -> None:
    never = asyncio.get_running_loop().create_future()
    with stop_on_signals() as stop:
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), sig)
        with pytest.raises(Stopped):
            async with asyncio.timeout(5):
                await until_stopped(stop, never)
    assert never.cancelled()


async def test_a_wait_that_finishes_first_returns_its_result_and_its_errors() -> None:
    with stop_on_signals() as stop:
        assert await until_stopped(stop, asyncio.sleep(0, "done")) == "done"
        with pytest.raises(ZeroDivisionError):
            await until_stopped(stop, _fail())


async def test_the_handlers_are_removed_when_the_block_ends() -> None:
    loop = asyncio.get_running_loop()
    with stop_on_signals():
        pass
    assert not loop.remove_signal_handler(signal.SIGTERM)  # nothing left to remove


async def _fail() -> None:
    raise ZeroDivisionError
