"""The keyring store contract: memory, SQLite and PostgreSQL behave alike (see broker.tokens.keystore)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from broker.errors import StoreConflictError
from broker.store import Store
from broker.tokens.keystore import KeyMove, KeyringChange, KeyState
from tests.unit.store.conftest import OpenReplica
from tests.unit.store.helpers import T0, key

A, N, R, RD, RV = KeyState.ACTIVE, KeyState.NEXT, KeyState.RETIRING, KeyState.RETIRED, KeyState.REVOKED


def rotation(active: str, nxt: str, new: str, minutes: int) -> KeyringChange:
    """The scheduled rotation: active -> retiring, next -> active, a fresh next key."""
    return KeyringChange(
        at=T0 + timedelta(minutes=minutes),
        moves=(KeyMove(nxt, N, A), KeyMove(active, A, R)),
        adds=(key(new, minutes=minutes),),
    )


async def seeded(store: Store) -> Store:
    assert await store.keyring.apply(KeyringChange(at=T0, adds=(key("k1", A), key("k2", N, minutes=1))))
    return store


async def test_empty_store_has_no_keys(store: Store) -> None:
    assert list(await store.keyring.keys()) == []


async def test_added_keys_read_back_exactly_oldest_first(store: Store) -> None:
    await seeded(store)
    assert list(await store.keyring.keys()) == [key("k1", A), key("k2", N, minutes=1)]


async def test_rotation_moves_states_and_stamps_times(store: Store) -> None:
    await seeded(store)
    assert await store.keyring.apply(rotation("k1", "k2", "k3", 10))
    keys = {k.kid: k for k in await store.keyring.keys()}
    assert {kid: k.state for kid, k in keys.items()} == {"k1": R, "k2": A, "k3": N}
    assert keys["k1"].retiring_at == keys["k2"].activated_at == T0 + timedelta(minutes=10)
    assert keys["k2"].wrapped_key == key("k2").wrapped_key


async def test_stale_compare_and_set_changes_nothing(store: Store) -> None:
    await seeded(store)
    assert await store.keyring.apply(rotation("k1", "k2", "k3", 10))
    before = list(await store.keyring.keys())
    assert not await store.keyring.apply(rotation("k1", "k2", "k4", 11))
    assert list(await store.keyring.keys()) == before


async def test_concurrent_rotation_exactly_one_replica_wins(open_replica: OpenReplica) -> None:
    replicas = [await open_replica() for _ in range(4)]
    await seeded(replicas[0])
    results = await asyncio.gather(
        *(r.keyring.apply(rotation("k1", "k2", f"new-{i}", 10)) for i, r in enumerate(replicas))
    )
    assert sorted(results) == [False, False, False, True]
    keys = await replicas[1].keyring.keys()
    assert sum(k.state is A for k in keys) == 1
    assert len(keys) == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (KeyringChange(at=T0, moves=(KeyMove("nope", N, A),)), "no signing key with kid 'nope'"),
        (KeyringChange(at=T0, adds=(key("k1"),)), "already exists"),
        (KeyringChange(at=T0, moves=(KeyMove("k2", N, A),)), "two active"),
        (KeyringChange(at=T0, adds=(key("k9", A),)), "two active"),
    ],
    ids=["unknown-kid", "duplicate-kid", "second-active-by-move", "second-active-by-add"],
)
async def test_refused_change_raises_and_changes_nothing(store: Store, change: KeyringChange, message: str) -> None:
    await seeded(store)
    before = list(await store.keyring.keys())
    with pytest.raises(StoreConflictError, match=message):
        await store.keyring.apply(change)
    assert list(await store.keyring.keys()) == before


async def test_a_conflict_after_successful_moves_rolls_them_back(store: Store) -> None:
    await seeded(store)
    before = list(await store.keyring.keys())
    change = KeyringChange(at=T0, moves=(KeyMove("k1", A, R),), adds=(key("k2"),))
    with pytest.raises(StoreConflictError, match="already exists"):
        await store.keyring.apply(change)
    assert list(await store.keyring.keys()) == before


async def test_emergency_revoke_from_active(store: Store) -> None:
    await seeded(store)
    assert await store.keyring.apply(KeyringChange(at=T0, moves=(KeyMove("k1", A, RV), KeyMove("k2", N, A))))
    states = {k.kid: (k.state, k.retired_at) for k in await store.keyring.keys()}
    assert states == {"k1": (RV, T0), "k2": (A, None)}


def test_illegal_moves_are_refused_before_any_store() -> None:
    for expected, new in [(RD, A), (RV, A), (N, RD), (A, N), (R, A)]:
        with pytest.raises(ValueError, match="cannot move"):
            KeyMove("k", expected, new)


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        KeyringChange(at=T0.replace(tzinfo=None))


def test_a_change_names_each_key_once() -> None:
    with pytest.raises(ValueError, match="each key once"):
        KeyringChange(at=T0, moves=(KeyMove("k1", A, R),), adds=(key("k1"),))


async def test_compare_and_set_failing_after_an_earlier_move_changes_nothing(store: Store) -> None:
    await seeded(store)
    # k2 already moved (revoked) by someone else; k1's move is listed first and succeeds before k2's fails.
    assert await store.keyring.apply(KeyringChange(at=T0, moves=(KeyMove("k2", N, RV),)))
    before = list(await store.keyring.keys())
    change = KeyringChange(at=T0 + timedelta(minutes=5), moves=(KeyMove("k1", A, R), KeyMove("k2", N, A)))
    assert not await store.keyring.apply(change)
    assert list(await store.keyring.keys()) == before


async def test_concurrent_revoke_and_rotation_with_different_first_moves(open_replica: OpenReplica) -> None:
    replicas = [await open_replica() for _ in range(2)]
    await seeded(replicas[0])
    revoke = KeyringChange(at=T0 + timedelta(minutes=3), moves=(KeyMove("k1", A, RV), KeyMove("k2", N, A)))
    rotate = KeyringChange(
        at=T0 + timedelta(minutes=3),
        moves=(KeyMove("k2", N, A), KeyMove("k1", A, R)),
        adds=(key("k3", minutes=3),),
    )
    results = await asyncio.gather(replicas[0].keyring.apply(revoke), replicas[1].keyring.apply(rotate))
    assert sorted(results) == [False, True]
    states = {k.kid: k.state for k in await replicas[1].keyring.keys()}
    if results[0]:
        assert states == {"k1": RV, "k2": A}
    else:
        assert states == {"k1": R, "k2": A, "k3": N}


async def test_rewrap_swaps_the_wrapping_and_keeps_the_state(store: Store) -> None:
    await seeded(store)
    assert await store.keyring.rewrap("k1", "kek-1", b"rewrapped", "kek-2")
    keys = {k.kid: k for k in await store.keyring.keys()}
    assert (keys["k1"].wrapped_key, keys["k1"].kek_id, keys["k1"].state) == (b"rewrapped", "kek-2", A)
    assert keys["k2"] == key("k2", N, minutes=1)


async def test_rewrap_from_a_stale_kek_id_changes_nothing(store: Store) -> None:
    await seeded(store)
    assert await store.keyring.rewrap("k1", "kek-1", b"first", "kek-2")
    assert not await store.keyring.rewrap("k1", "kek-1", b"second", "kek-3")
    keys = {k.kid: k for k in await store.keyring.keys()}
    assert (keys["k1"].wrapped_key, keys["k1"].kek_id) == (b"first", "kek-2")


async def test_rewrap_of_an_unknown_kid_is_refused(store: Store) -> None:
    await seeded(store)
    with pytest.raises(StoreConflictError, match="no signing key with kid 'nope'"):
        await store.keyring.rewrap("nope", "kek-1", b"x", "kek-2")
