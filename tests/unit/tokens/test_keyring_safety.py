"""The keyring's guards beyond the schedule: the ledger holds retirement back while tokens a key signed are live,
a replica that cannot confirm its keyring stops signing, and every key it creates is reported for the audit."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from broker._sealing import KekRing
from broker.errors import StoreUnavailableError, TemporarilyUnavailableError
from broker.store.memory.keyring import MemoryKeyring
from broker.testing import ManualClock
from broker.tokens.keys import SigningKey
from broker.tokens.keystore import KeyMove, KeyRecord, KeyringChange, KeyState
from broker.tokens.rotation import RotationTooEarlyError
from broker.tokens.sealed_keys import unseal_key
from tests.unit.tokens.keyring_helpers import LEEWAY, PERIOD, RETIRE_AFTER, at, open_keyring, published_kids


class _Ledger:
    """What the ledger answers: the latest ``exp`` of live tokens per kid (None: none live); ``down`` fails."""

    def __init__(self) -> None:
        self.valid_until: dict[str, datetime] = {}
        self.down = False

    async def blast_radius(self, kid: str, now: datetime) -> object:
        if self.down:
            raise StoreUnavailableError("ledger down")
        until = self.valid_until.get(kid)
        return _Radius(until if until is not None and until > now else None)


class _Radius:
    def __init__(self, valid_until: datetime | None) -> None:
        self.valid_until = valid_until


async def test_a_retiring_key_stays_while_the_ledger_knows_live_tokens_it_signed() -> None:
    clock, ledger = ManualClock(), _Ledger()
    store = MemoryKeyring()
    keyring = await open_keyring(store, clock, blast_radius=ledger)
    first = keyring.active_key().kid
    clock.advance(PERIOD)
    await keyring.tick()
    # another replica (or this one before a restart) allowed a token far longer than this schedule's window
    ledger.valid_until[first] = at(clock) + timedelta(seconds=RETIRE_AFTER * 3)
    clock.advance(RETIRE_AFTER)
    assert (await keyring.tick()).retired == ()
    assert first in published_kids(keyring)
    clock.advance(RETIRE_AFTER * 2 + LEEWAY)
    assert (await keyring.tick()).retired == (first,)


async def test_a_ledger_that_does_not_answer_retires_nothing() -> None:
    clock, ledger = ManualClock(), _Ledger()
    keyring = await open_keyring(MemoryKeyring(), clock, blast_radius=ledger)
    first = keyring.active_key().kid
    clock.advance(PERIOD)
    await keyring.tick()
    ledger.down = True
    clock.advance(RETIRE_AFTER + 1)
    assert (await keyring.tick()).retired == ()
    assert first in published_kids(keyring)


async def test_a_replica_that_cannot_confirm_its_keyring_stops_signing_and_resumes_after_a_reload() -> None:
    clock = ManualClock()
    keyring = await open_keyring(MemoryKeyring(), clock)
    keyring.max_unconfirmed = 30.0
    clock.advance(30)
    assert keyring.active_key() is not None
    clock.advance(1)
    with pytest.raises(TemporarilyUnavailableError, match="not been confirmed"):
        keyring.active_key()
    assert keyring.published_keys()  # verifiers still get the JWKS
    await keyring.reload()
    assert keyring.active_key() is not None


async def test_manual_rotate_without_a_next_key_publishes_one_says_so_and_reports_it_created() -> None:
    clock = ManualClock()
    store = MemoryKeyring()
    keyring = await open_keyring(store, clock)
    assert sorted(state for _, state, _ in keyring.created) == [KeyState.ACTIVE, KeyState.NEXT]
    keyring.created.clear()
    next_kid = next(v.kid for v in keyring.views() if v.state is KeyState.NEXT)
    gone = KeyringChange(at=at(clock), moves=(KeyMove(next_kid, KeyState.NEXT, KeyState.REVOKED),))
    assert await store.apply(gone)  # e.g. revoked by an older broker that did not replace it
    with pytest.raises(RotationTooEarlyError, match="published now"):
        await keyring.rotate()
    assert [state for _, state, _ in keyring.created] == [KeyState.NEXT]
    assert keyring.active_key().kid not in {kid for kid, _, _ in keyring.created}  # the active key did not change


async def test_a_reload_that_finds_nothing_changed_unseals_nothing_but_confirms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import broker.tokens.keyring as keyring_module

    clock = ManualClock()
    keyring = await open_keyring(MemoryKeyring(), clock)
    keyring.max_unconfirmed = 30.0
    unsealed: list[str] = []

    def counting(keks: KekRing, record: KeyRecord) -> SigningKey:
        unsealed.append(record.kid)
        return unseal_key(keks, record)

    monkeypatch.setattr(keyring_module, "unseal_key", counting)
    clock.advance(31)
    await keyring.reload()
    assert unsealed == []
    assert keyring.active_key() is not None  # confirmed again
    clock.advance(PERIOD)
    await keyring.tick()  # a rotation changes the records: the new next key is opened
    assert unsealed
