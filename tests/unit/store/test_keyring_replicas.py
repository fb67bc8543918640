"""Two keyrings (two replicas) on one store, on memory, a SQLite file and a real PostgreSQL: of concurrent first
starts, rotations and revokes exactly one takes effect, and both replicas converge after a reload."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from broker.store import Store
from broker.testing import ManualClock
from broker.tokens.keyring import Keyring, Revocation, TickResult
from broker.tokens.keystore import KeyRecord, KeyringChange, KeyringStore, KeyState
from broker.tokens.rotation import KeyNotLiveError
from tests.unit.store.conftest import OpenReplica
from tests.unit.tokens.keyring_helpers import PERIOD, kids_in, open_keyring, published_kids, states

A, N, R, RV = KeyState.ACTIVE, KeyState.NEXT, KeyState.RETIRING, KeyState.REVOKED


class ReadTogether:
    """A store whose next read waits until every armed replica has read: all act on the same state."""

    def __init__(self, inner: KeyringStore, barrier: asyncio.Barrier) -> None:
        self.inner, self.barrier, self.armed = inner, barrier, False

    async def keys(self) -> Sequence[KeyRecord]:
        keys = await self.inner.keys()
        if self.armed:
            self.armed = False
            await self.barrier.wait()
        return keys

    async def apply(self, change: KeyringChange) -> bool:
        return await self.inner.apply(change)

    async def rewrap(self, kid: str, expected_kek_id: str, wrapped_key: bytes, kek_id: str) -> bool:
        return await self.inner.rewrap(kid, expected_kek_id, wrapped_key, kek_id)


Replicas = tuple[Store, list[ReadTogether], list[Keyring]]


async def two_replicas(open_replica: OpenReplica, clock: ManualClock) -> Replicas:
    """Two store handles on one store, each read through a gate, and a keyring opened on each at the same time."""
    stores = [await open_replica() for _ in range(2)]
    barrier = asyncio.Barrier(2)
    gated = [ReadTogether(s.keyring, barrier) for s in stores]
    for gate in gated:
        gate.armed = True
    keyrings = list(await asyncio.gather(*(open_keyring(g, clock) for g in gated)))
    return stores[0], gated, keyrings


def arm(gated: list[ReadTogether]) -> None:
    for gate in gated:
        gate.armed = True


async def converged(keyrings: list[Keyring]) -> None:
    for keyring in keyrings:
        await keyring.reload()
    assert len({k.active_key().kid for k in keyrings}) == 1
    assert len({frozenset(published_kids(k)) for k in keyrings}) == 1


async def test_concurrent_first_starts_make_one_active_key(open_replica: OpenReplica) -> None:
    clock = ManualClock()
    store, _, keyrings = await two_replicas(open_replica, clock)
    assert len(await kids_in(store.keyring, A)) == 1 and len(await kids_in(store.keyring, N)) == 1
    assert keyrings[0].active_key().kid == keyrings[1].active_key().kid
    await converged(keyrings)


async def test_concurrent_scheduled_rotations_rotate_once(open_replica: OpenReplica) -> None:
    clock = ManualClock()
    store, gated, keyrings = await two_replicas(open_replica, clock)
    first = keyrings[0].active_key().kid
    clock.advance(PERIOD)
    arm(gated)
    results: list[TickResult] = list(await asyncio.gather(*(k.tick() for k in keyrings)))
    assert sum(r.rotation is not None for r in results) == 1
    assert sum(r.lost_to_peer for r in results) == 1
    assert sorted((await states(store.keyring)).values()) == sorted([A, N, R])
    assert (await states(store.keyring))[first] is R
    await converged(keyrings)
    assert keyrings[1].active_key().kid != first


async def test_concurrent_revokes_of_the_active_key_revoke_once(open_replica: OpenReplica) -> None:
    clock = ManualClock()
    store, gated, keyrings = await two_replicas(open_replica, clock)
    old = keyrings[0].active_key().kid
    arm(gated)
    results = await asyncio.gather(*(k.revoke(old) for k in keyrings), return_exceptions=True)
    assert sum(isinstance(r, Revocation) for r in results) == 1
    assert sum(isinstance(r, KeyNotLiveError) for r in results) == 1
    assert (await states(store.keyring))[old] is RV and len(await kids_in(store.keyring, A)) == 1
    await converged(keyrings)
    assert old not in published_kids(keyrings[0]) and keyrings[1].active_key().kid != old


@pytest.mark.parametrize("ticks_first", [True, False], ids=["rotation-first", "revoke-first"])
async def test_a_rotation_and_a_revoke_at_once_leave_one_active_key(
    open_replica: OpenReplica, ticks_first: bool
) -> None:
    clock = ManualClock()
    store, gated, keyrings = await two_replicas(open_replica, clock)
    old = keyrings[0].active_key().kid
    clock.advance(PERIOD)
    arm(gated)
    tick, revoke = keyrings[0].tick(), keyrings[1].revoke(old)
    await asyncio.gather(*((tick, revoke) if ticks_first else (revoke, tick)))
    final = await states(store.keyring)
    assert final[old] is RV and list(final.values()).count(A) == 1
    await converged(keyrings)
    assert keyrings[0].active_key().kid != old
