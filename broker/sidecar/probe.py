"""Probing the token service only when there is no other traffic.

Every contact is recorded in :class:`~broker.sidecar.health.TokenServiceHealth`, so a successful exchange counts as
a probe: the RFC 8414 metadata is fetched only after ``interval`` seconds without a successful contact, at once
when the X.509-SVID changes (a new identity may change the answer), and with exponential backoff and jitter while
the token service is unreachable. Without an X.509-SVID nothing is probed: there is nothing to connect with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from broker.identity.source import X509Source, current_x5t
from broker.sidecar.health import TokenServiceHealth

__all__ = ["Probeable", "probe_when_idle"]

log = logging.getLogger(__name__)


class Probeable(Protocol):
    """A token service link that can be probed and records every contact in ``health``."""

    health: TokenServiceHealth

    async def probe(self) -> bool: ...


async def probe_when_idle(
    link: Probeable,
    source: X509Source,
    *,
    interval: float,
    wake: asyncio.Event,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Run until cancelled; ``wake`` (set on every SVID change) makes the next probe immediate."""
    while True:
        wake.clear()
        delay = link.health.next_check(interval) - monotonic()
        if delay > 0:
            if not await _woken(wake, delay):
                continue  # traffic meanwhile may have moved the next check: look again
            wake.clear()
        if current_x5t(source) is None:
            await _woken(wake, interval)  # no identity yet: wait for one (the source notifies)
            continue
        try:
            await link.probe()
        except Exception:  # a probe must never end the loop; the next one may succeed
            log.exception("token service probe failed unexpectedly")
        if link.health.next_check(interval) <= monotonic():  # the probe recorded nothing: never spin
            await _woken(wake, interval)


async def _woken(wake: asyncio.Event, timeout: float) -> bool:
    """Wait for ``wake`` at most ``timeout`` seconds; True if it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), timeout)
        return True
    return False
