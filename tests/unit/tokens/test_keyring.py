"""Tests for broker.tokens.keyring on the in-memory store twin: states, published and active sets, the schedule,
manual rotation, emergency revoke, a wrong KEK, KEK rotation and the one-time import of the legacy key files."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from broker._sealing import KekRing
from broker.errors import ConfigError, SealingError, StoreError, TemporarilyUnavailableError
from broker.store.memory.keyring import MemoryKeyring
from broker.testing import ManualClock
from broker.tokens.keyring import rotate_kek
from broker.tokens.keys import FileKeyStore, SigningKey, jwks
from broker.tokens.keystore import KeyringChange, KeyState
from broker.tokens.rotation import KeyNotLiveError, RotationTooEarlyError, UnknownKeyError
from broker.tokens.sealed_keys import seal_key
from tests.unit.tokens.keyring_helpers import (
    KEK_1,
    KEK_2,
    PERIOD,
    PUBLISH_LEAD,
    RETIRE_AFTER,
    at,
    kids_in,
    open_keyring,
    published_kids,
    states,
    verifies,
)

A, N, R, RD, RV = KeyState.ACTIVE, KeyState.NEXT, KeyState.RETIRING, KeyState.RETIRED, KeyState.REVOKED


@pytest.fixture
def store() -> MemoryKeyring:
    return MemoryKeyring()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def test_first_open_generates_an_active_and_a_next_key(store: MemoryKeyring, clock: ManualClock) -> None:
    keyring = await open_keyring(store, clock)
    assert sorted((await states(store)).values()) == sorted([A, N])
    assert keyring.active_key().kid == (await kids_in(store, A))[0]
    assert published_kids(keyring) == set(await states(store))
    assert jwks(keyring.published_keys())["keys"][0]["kid"] == keyring.active_key().kid


async def test_a_second_open_adopts_the_stored_keys(store: MemoryKeyring, clock: ManualClock) -> None:
    first = await open_keyring(store, clock)
    second = await open_keyring(store, clock)
    assert second.active_key().kid == first.active_key().kid
    assert published_kids(second) == published_kids(first) and len(await store.keys()) == 2
    assert verifies(first.active_key(), second.active_key())


async def test_concurrent_first_opens_make_one_active_key(store: MemoryKeyring, clock: ManualClock) -> None:
    keyrings = await asyncio.gather(*(open_keyring(store, clock) for _ in range(3)))
    assert len(await kids_in(store, A)) == 1
    assert {k.active_key().kid for k in keyrings} == set(await kids_in(store, A))


async def test_tick_before_the_period_changes_nothing(store: MemoryKeyring, clock: ManualClock) -> None:
    keyring = await open_keyring(store, clock)
    before = await store.keys()
    clock.advance(PERIOD - 1)
    result = await keyring.tick()
    assert result.rotation is None and result.retired == () and result.deferred is None
    assert await store.keys() == before


async def test_tick_after_the_period_rotates_in_one_change(store: MemoryKeyring, clock: ManualClock) -> None:
    keyring = await open_keyring(store, clock)
    old_active, old_next = keyring.active_key().kid, (await kids_in(store, N))[0]
    clock.advance(PERIOD)
    result = await keyring.tick()
    assert result.rotation is not None
    assert (result.rotation.previous_kid, result.rotation.active_kid) == (old_active, old_next)
    assert result.rotation.at == at(clock)
    new_next = result.rotation.next_kid
    assert await states(store) == {old_active: R, old_next: A, new_next: N}
    assert keyring.active_key().kid == old_next
    assert published_kids(keyring) == {old_active, old_next, new_next}


async def test_a_retiring_key_stays_published_for_max_lifetime_plus_leeway(
    store: MemoryKeyring, clock: ManualClock
) -> None:
    keyring = await open_keyring(store, clock)
    first = keyring.active_key().kid
    clock.advance(PERIOD)
    await keyring.tick()
    clock.advance(RETIRE_AFTER - 1)
    assert (await keyring.tick()).retired == ()
    assert first in published_kids(keyring)
    clock.advance(1)
    assert (await keyring.tick()).retired == (first,)
    assert first not in published_kids(keyring) and (await states(store))[first] is RD
    assert first not in {k["kid"] for k in jwks(keyring.published_keys())["keys"]}


async def test_scheduled_rotation_waits_for_a_young_next_key(store: MemoryKeyring, clock: ManualClock) -> None:
    keyring = await open_keyring(store, clock)
    clock.advance(PERIOD - 10)
    replaced = await keyring.revoke((await kids_in(store, N))[0])  # a fresh next key, published now
    clock.advance(10)
    deferred = await keyring.tick()
    assert deferred.rotation is None and deferred.deferred is not None
    assert "jwks_max_age 300 s + leeway 60 s" in deferred.deferred
    clock.advance(PUBLISH_LEAD - 10)
    rotated = await keyring.tick()
    assert rotated.rotation is not None and rotated.rotation.active_kid == replaced.next_kid


async def test_manual_rotate_before_the_next_key_is_old_enough_changes_nothing(
    store: MemoryKeyring, clock: ManualClock
) -> None:
    keyring = await open_keyring(store, clock)
    before = await store.keys()
    clock.advance(PUBLISH_LEAD - 1)
    with pytest.raises(RotationTooEarlyError, match="jwks_max_age 300 s \\+ leeway 60 s: rotate at or after"):
        await keyring.rotate()
    assert await store.keys() == before


async def test_manual_rotate_ignores_the_period(store: MemoryKeyring, clock: ManualClock) -> None:
    keyring = await open_keyring(store, clock)
    old = keyring.active_key().kid
    clock.advance(PUBLISH_LEAD)
    rotation = await keyring.rotate()
    assert rotation.previous_kid == old and keyring.active_key().kid == rotation.active_kid != old
    assert (await states(store))[old] is R


async def test_revoking_the_active_key_stops_it_signing_and_publishes_it_no_more(
    store: MemoryKeyring, clock: ManualClock
) -> None:
    keyring = await open_keyring(store, clock)
    old, nxt = keyring.active_key().kid, (await kids_in(store, N))[0]
    clock.advance(5)
    result = await keyring.revoke(old)
    assert (result.kid, result.was, result.active_kid, result.at) == (old, A, nxt, at(clock))
    assert result.blast_radius is None and result.next_kid is not None
    assert keyring.active_key().kid == nxt
    assert old not in published_kids(keyring)
    assert await states(store) == {old: RV, nxt: A, result.next_kid: N}


async def test_revoking_the_next_key_replaces_it(store: MemoryKeyring, clock: ManualClock) -> None:
    keyring = await open_keyring(store, clock)
    active, nxt = keyring.active_key().kid, (await kids_in(store, N))[0]
    result = await keyring.revoke(nxt)
    assert result.active_kid == active and result.next_kid is not None
    assert published_kids(keyring) == {active, result.next_kid}


async def test_revoking_a_retiring_key_removes_it_from_the_jwks(store: MemoryKeyring, clock: ManualClock) -> None:
    keyring = await open_keyring(store, clock)
    first = keyring.active_key().kid
    clock.advance(PERIOD)
    await keyring.tick()
    result = await keyring.revoke(first)
    assert result.was is R and result.next_kid is None
    assert first not in published_kids(keyring) and (await states(store))[first] is RV


async def test_revoking_an_unknown_kid_changes_nothing(store: MemoryKeyring, clock: ManualClock) -> None:
    keyring = await open_keyring(store, clock)
    before = await store.keys()
    with pytest.raises(UnknownKeyError, match="no signing key with kid 'nope'"):
        await keyring.revoke("nope")
    assert await store.keys() == before


async def test_revoking_a_revoked_kid_changes_nothing(store: MemoryKeyring, clock: ManualClock) -> None:
    keyring = await open_keyring(store, clock)
    old = keyring.active_key().kid
    await keyring.revoke(old)
    before = await store.keys()
    with pytest.raises(KeyNotLiveError, match="already revoked"):
        await keyring.revoke(old)
    assert await store.keys() == before


class Ledger:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.asked: list[tuple[str, datetime]] = []

    async def blast_radius(self, kid: str, now: datetime) -> object:
        self.asked.append((kid, now))
        if self.fail:
            raise StoreError("ledger unavailable")
        return {"kid": kid, "live_tokens": 3}


async def test_revoke_reports_the_blast_radius_from_the_source(store: MemoryKeyring, clock: ManualClock) -> None:
    ledger = Ledger()
    keyring = await open_keyring(store, clock, blast_radius=ledger)
    old = keyring.active_key().kid
    result = await keyring.revoke(old)
    assert result.blast_radius == {"kid": old, "live_tokens": 3} and ledger.asked == [(old, at(clock))]


async def test_a_failing_blast_radius_source_does_not_undo_the_revoke(store: MemoryKeyring, clock: ManualClock) -> None:
    keyring = await open_keyring(store, clock, blast_radius=Ledger(fail=True))
    old = keyring.active_key().kid
    result = await keyring.revoke(old)
    assert result.blast_radius is None and result.blast_radius_error == "ledger unavailable"
    assert (await states(store))[old] is RV


async def test_a_wrong_kek_at_open_is_a_clear_error_and_changes_nothing(
    store: MemoryKeyring, clock: ManualClock
) -> None:
    await open_keyring(store, clock)
    before = await store.keys()
    with pytest.raises(SealingError) as caught:
        await open_keyring(store, clock, KekRing(KEK_2))
    assert KEK_1.kek_id in str(caught.value) and "--kek-file" in str(caught.value)
    assert await store.keys() == before


async def test_a_wrapped_key_moved_to_another_kid_does_not_open(store: MemoryKeyring, clock: ManualClock) -> None:
    keks = KekRing(KEK_1)
    one, two = SigningKey.generate(), SigningKey.generate()
    swapped = replace(seal_key(keks, two, A, at(clock)), wrapped_key=seal_key(keks, one, A, at(clock)).wrapped_key)
    await store.apply(KeyringChange(at=at(clock), adds=(swapped,)))
    with pytest.raises(SealingError, match=f"signing key {two.kid}: .*does not open"):
        await open_keyring(store, clock)


async def test_a_replica_whose_kek_cannot_open_a_new_key_stops_signing_with_a_revoked_one(
    store: MemoryKeyring, clock: ManualClock
) -> None:
    old_kek_only = await open_keyring(store, clock)
    rotated = await open_keyring(store, clock, KekRing(KEK_2, [KEK_1]))
    revoked = old_kek_only.active_key().kid
    await rotated.revoke(revoked)  # its fresh next key is sealed under KEK_2
    with pytest.raises(SealingError):
        await old_kek_only.reload()
    with pytest.raises(TemporarilyUnavailableError):
        old_kek_only.active_key()
    assert revoked not in published_kids(old_kek_only)


async def test_kek_rotation_keeps_kids_and_signatures(store: MemoryKeyring, clock: ManualClock) -> None:
    before = await open_keyring(store, clock)
    clock.advance(PERIOD)
    await before.tick()  # three keys: retiring, active, next
    kids = await states(store)
    result = await rotate_kek(store, KekRing(KEK_2, [KEK_1]))
    assert result.kek_id == KEK_2.kek_id and set(result.rewrapped) == set(kids) and result.unchanged == 0
    assert await states(store) == kids and {k.kek_id for k in await store.keys()} == {KEK_2.kek_id}
    after = await open_keyring(store, clock, KekRing(KEK_2))  # the old KEK is no longer needed
    assert after.active_key().kid == before.active_key().kid
    assert published_kids(after) == published_kids(before)
    assert verifies(before.active_key(), after.active_key())
    again = await rotate_kek(store, KekRing(KEK_2))
    assert again.rewrapped == () and again.unchanged == 3


async def test_kek_rotation_without_the_old_kek_changes_nothing(store: MemoryKeyring, clock: ManualClock) -> None:
    await open_keyring(store, clock)
    before = await store.keys()
    with pytest.raises(SealingError, match="previous_kek_files"):
        await rotate_kek(store, KekRing(KEK_2))
    assert await store.keys() == before


def legacy_files(directory: Path) -> FileKeyStore:
    files = FileKeyStore(directory)
    files.rotate()  # an active and a previous file, as an upgraded server leaves them
    return files


async def test_legacy_key_files_are_imported_once(
    store: MemoryKeyring, clock: ManualClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = legacy_files(tmp_path / "state")
    with caplog.at_level(logging.INFO, logger="broker.tokens.keyring"):
        keyring = await open_keyring(store, clock, legacy_dir=tmp_path / "state")
    active, previous = files.active_key().kid, files.published_keys()[1].kid
    assert keyring.active_key().kid == active
    assert (await states(store))[previous] is R and len(await kids_in(store, N)) == 1
    assert verifies(files.active_key(), keyring.active_key())
    assert [r.message for r in caplog.records if "imported" in r.message] == [
        f"keyring: imported the legacy signing key files from {tmp_path / 'state'} into the store (kid {active}); "
        "they are no longer read and can be removed after a backup"
    ]
    before = await store.keys()
    legacy_files(tmp_path / "other")
    again = await open_keyring(store, clock, legacy_dir=tmp_path / "other")
    assert again.active_key().kid == active and await store.keys() == before


async def test_a_legacy_key_file_others_can_read_is_refused(
    store: MemoryKeyring, clock: ManualClock, tmp_path: Path
) -> None:
    legacy_files(tmp_path)
    (tmp_path / "token-signing-key.pem").chmod(0o644)
    with pytest.raises(ConfigError, match="mode 0600"):
        await open_keyring(store, clock, legacy_dir=tmp_path)
    assert await store.keys() == []


async def test_without_legacy_files_a_fresh_key_is_generated(
    store: MemoryKeyring, clock: ManualClock, tmp_path: Path
) -> None:
    keyring = await open_keyring(store, clock, legacy_dir=tmp_path)
    assert len(await store.keys()) == 2 and keyring.active_key().kid in await kids_in(store, A)


async def test_key_views_list_every_key_without_key_bytes(store: MemoryKeyring, clock: ManualClock) -> None:
    keyring = await open_keyring(store, clock)
    old = keyring.active_key().kid
    await keyring.revoke(old)
    views = {v.kid: v for v in keyring.views()}
    assert set(views) == set(await states(store)) and views[old].state is RV
    assert views[old].retired_at == at(clock) and views[old].kek_id == KEK_1.kek_id
    assert "wrapped" not in repr(views[old]) and not hasattr(views[old], "wrapped_key")
