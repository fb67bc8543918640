"""SIGINT/SIGTERM for the long-running commands: one stop event, and waits that a signal ends at once.

Every command that waits (for the Workload API, the first SVID, the token service, or just until stopped) does so
inside :func:`stop_on_signals` and through :func:`until_stopped`, so a signal is honoured in every phase (a pod
deleted while the agent is down must not wait out its grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Iterator
from typing import TypeVar

__all__ = ["Stopped", "stop_on_signals", "until_stopped"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(Exception):
    """SIGINT or SIGTERM arrived while waiting."""


@contextlib.contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (replacing any inherited disposition, SIG_IGN
    included); the loop's handlers are removed when it ends."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s: stopping", sig.name)
        stop.set()

    for sig in _SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield stop
    finally:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)


async def until_stopped(stop: asyncio.Event, awaitable: Awaitable[_T]) -> _T:
    """Await ``awaitable`` unless ``stop`` is set first: then cancel it and raise :class:`Stopped`.

    A result (or error) that is already there wins over a signal that arrived in the same instant. The task is
    never left behind, also when the caller itself is cancelled (a timeout around this call).
    """
    task, stopper = asyncio.ensure_future(awaitable), asyncio.ensure_future(stop.wait())
    stopped = False
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            stopped = True
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if stopped:
        raise Stopped
    return task.result()
