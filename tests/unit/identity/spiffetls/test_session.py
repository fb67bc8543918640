"""SvidSession: one aiohttp session per X.509-SVID certificate, retired when the source rotates it."""

from __future__ import annotations

import asyncio

from broker.devtools.devca import DevCA
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.session import SvidSession

WORKLOAD = SpiffeId.parse("spiffe://example.org/workload")


async def test_the_session_is_kept_until_the_certificate_rotates_then_replaced_and_the_old_one_closed() -> None:
    source = InMemorySvidSource(DevCA.ephemeral("example.org"), WORKLOAD)
    session = SvidSession(source, None, timeout=5.0)
    first = session.get()
    assert session.get() is first

    source.rotate()
    await asyncio.sleep(0)  # the source notifies on the loop

    second = session.get()
    assert second is not first
    await session.aclose()
    assert first.closed and second.closed


async def test_retire_replaces_the_session_without_a_rotation() -> None:
    source = InMemorySvidSource(DevCA.ephemeral("example.org"), WORKLOAD)
    session = SvidSession(source, None, timeout=5.0)
    first = session.get()

    session.retire()

    assert session.get() is not first
    await session.aclose()
    assert first.closed


async def test_after_aclose_a_rotation_changes_nothing() -> None:
    source = InMemorySvidSource(DevCA.ephemeral("example.org"), WORKLOAD)
    session = SvidSession(source, None, timeout=5.0)
    await session.aclose()

    source.rotate()
    await asyncio.sleep(0)  # unsubscribed: no retire, no task on a closed session
