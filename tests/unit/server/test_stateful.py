"""The token service's shared state: opening it (KEK, schedule, store), following other replicas, housekeeping."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from broker._sealing import generate_kek_file
from broker.config import BrokerSettings, load_settings
from broker.errors import ConfigError, SealingError
from broker.server.housekeeping import Housekeeper
from broker.server.stateful import ServiceState, open_migrated, open_state
from broker.store import latest_version, open_store
from broker.store.url import StoreUrl
from broker.testing import WEB_POLICY, ManualClock
from broker.tokens.keystore import KeyState
from broker.tokens.policy import FilePolicyStore

FOLLOW_BOUND_S = 2.0  # the SQLite feed polls every 0.1 s; the bound is generous for a loaded CI machine


def _settings(tmp_path: Path, kek: Path | None, **keyring: float) -> BrokerSettings:
    overrides: dict[str, object] = {"state_dir": tmp_path / "state", "keyring": {**keyring}}
    if kek is not None:
        overrides["keyring"] = {"kek_file": kek, **keyring}
    return load_settings(None, overrides)


def _policy(tmp_path: Path) -> FilePolicyStore:
    path = tmp_path / "policy.yaml"
    if not path.exists():
        path.write_text(WEB_POLICY)
    return FilePolicyStore(path)


def _kek(tmp_path: Path, name: str = "kek") -> Path:
    path = tmp_path / name
    if not path.exists():
        generate_kek_file(path)
    return path


async def _open(tmp_path: Path, kek: Path | None = None, **keyring: float) -> ServiceState:
    settings = _settings(tmp_path, kek or _kek(tmp_path), **keyring)
    return await open_state(settings, policy_store=_policy(tmp_path), clock=time.time)


async def test_first_start_makes_an_active_and_a_next_key_and_a_restart_keeps_them(tmp_path: Path) -> None:
    state = await _open(tmp_path)
    try:
        first = {k.kid: k.state for k in state.keyring.views()}
        assert sorted(first.values()) == [KeyState.ACTIVE, KeyState.NEXT]
        created = [json.loads(r.body) for r in await state.store.audit.read(1, 10) if r.event == "key.created"]
        assert {(c["kid"], c["state"]) for c in created} == {(kid, s.value) for kid, s in first.items()}
    finally:
        await state.aclose()
    assert (tmp_path / "state" / "broker.db").stat().st_mode & 0o777 == 0o600
    again = await _open(tmp_path)
    try:
        assert {k.kid: k.state for k in again.keyring.views()} == first
        assert again.keyring.active_key().kid == next(kid for kid, s in first.items() if s is KeyState.ACTIVE)
    finally:
        await again.aclose()


async def test_no_kek_is_refused_before_the_store_is_created(tmp_path: Path) -> None:
    settings = _settings(tmp_path, None)
    with pytest.raises(ConfigError, match="no key-encryption key"):
        await open_state(settings, policy_store=_policy(tmp_path), clock=time.time)
    assert not (tmp_path / "state" / "broker.db").exists()


async def test_a_schedule_that_breaks_the_overlap_rule_is_refused_naming_the_numbers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rotation_period 100 s .*jwks_max_age 300 s"):
        await _open(tmp_path, rotation_period=100.0, jwks_max_age=300.0)
    assert not (tmp_path / "state" / "broker.db").exists()


async def test_a_wrong_kek_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    state = await _open(tmp_path)
    kids = {k.kid: k.state for k in state.keyring.views()}
    await state.aclose()
    with pytest.raises(SealingError):
        await _open(tmp_path, kek=_kek(tmp_path, "other-kek"))
    state = await _open(tmp_path)
    try:
        assert {k.kid: k.state for k in state.keyring.views()} == kids
    finally:
        await state.aclose()


async def test_a_replica_follows_a_rotation_made_by_another_on_the_same_store(tmp_path: Path) -> None:
    first = await _open(tmp_path, jwks_max_age=0.01, leeway=0.0)
    second = await _open(tmp_path, jwks_max_age=0.01, leeway=0.0)
    try:
        await asyncio.sleep(0.02)  # the next key has been published for jwks_max_age
        rotation = await first.keyring.rotate()
        started = time.monotonic()
        while second.keyring.active_key().kid != rotation.active_kid:
            assert time.monotonic() - started < FOLLOW_BOUND_S, "the second replica did not follow the rotation"
            await asyncio.sleep(0.02)
        assert {k.kid for k in second.keyring.published_keys()} == {k.kid for k in first.keyring.published_keys()}
    finally:
        await first.aclose()
        await second.aclose()


async def test_housekeeping_audits_policy_reloads_and_refusals_and_scheduled_rotations(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    policy = _policy(tmp_path)
    settings = _settings(tmp_path, _kek(tmp_path), rotation_period=600.0, jwks_max_age=60.0, leeway=0.0)
    state = await open_state(settings, policy_store=policy, clock=clock)
    try:
        keeper = Housekeeper(state.keyring, state.recorder, state.store.ledger, policy, clock)
        policy.path.write_text(WEB_POLICY.replace("max_token_lifetime: 300", "max_token_lifetime: 120") + "\n")
        policy.refresh()
        await keeper.tick()
        policy.path.write_text("rules: [oops\n")
        policy.refresh()
        await keeper.tick()
        clock.advance(601)
        await keeper.tick()
        await state.recorder.flush()
        records = await state.store.audit.read(1, 100)
        events = [r.event for r in records]
        assert "policy.reloaded" in events
        assert "policy.refused" in events
        rotated = [json.loads(r.body) for r in records if r.event == "key.rotated"]
        assert rotated and rotated[0]["reason"] == "scheduled"
        refused = next(json.loads(r.body) for r in records if r.event == "policy.refused")
        assert "oops" not in refused["reason"]
    finally:
        await state.aclose()


async def test_a_store_behind_is_migrated_at_start_and_the_migration_is_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import broker.store.sqlite._open as sqlite_open

    url = StoreUrl.parse(f"sqlite://{tmp_path / 'old.db'}")
    with monkeypatch.context() as patched:
        patched.setattr(sqlite_open, "MIGRATIONS", sqlite_open.MIGRATIONS[:1])
        old = await open_store(url)
        assert await old.schema_version() == 1
        await old.close()
    store, migrated = await open_migrated(url)
    try:
        assert await store.schema_version() == latest_version()
        assert migrated is not None
        assert (migrated.from_version, migrated.to_version) == (1, latest_version())
    finally:
        await store.close()
    again, nothing = await open_migrated(url)
    await again.close()
    assert nothing is None
