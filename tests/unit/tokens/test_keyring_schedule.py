"""Tests for broker.tokens.rotation: the schedule's overlap rule, and the changes a rotation, a retirement and a
revocation plan (pure functions over key records)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.errors import ConfigError
from broker.tokens.keystore import KeyMove, KeyRecord, KeyState
from broker.tokens.rotation import (
    KeyNotLiveError,
    RotationSchedule,
    RotationTooEarlyError,
    UnknownKeyError,
    plan_retirements,
    plan_revocation,
    plan_rotation,
)
from tests.unit.tokens.keyring_helpers import PUBLISH_LEAD, RETIRE_AFTER, SCHEDULE

A, N, R, RD, RV = KeyState.ACTIVE, KeyState.NEXT, KeyState.RETIRING, KeyState.RETIRED, KeyState.REVOKED
T0 = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


def record(kid: str, state: KeyState, created: float = 0.0, *, moved: float | None = None) -> KeyRecord:
    created_at = T0 + timedelta(seconds=created)
    stamp = created_at if moved is None else T0 + timedelta(seconds=moved)
    return KeyRecord(
        kid=kid,
        algorithm="ES256",
        state=state,
        wrapped_key=b"sealed",
        kek_id="kek",
        public_jwk="{}",
        created_at=created_at,
        activated_at=stamp if state is A else None,
        retiring_at=stamp if state is R else None,
        retired_at=stamp if state in (RD, RV) else None,
    )


def fresh(state: KeyState) -> KeyRecord:
    return record(f"fresh-{state}", state, 10_000)


def test_rotation_period_shorter_than_max_age_plus_leeway_is_refused_naming_both_numbers() -> None:
    with pytest.raises(ConfigError) as caught:
        RotationSchedule(period=200, jwks_max_age=300, max_token_lifetime=600, leeway=60)
    assert str(caught.value).startswith(
        "keyring.rotation_period 200 s is shorter than keyring.jwks_max_age 300 s + keyring.leeway 60 s"
    )
    assert "at least 360 s" in str(caught.value)


def test_rotation_period_equal_to_max_age_plus_leeway_is_accepted() -> None:
    schedule = RotationSchedule(period=360, jwks_max_age=300, max_token_lifetime=600, leeway=60)
    assert schedule.publish_lead == timedelta(seconds=360)
    assert schedule.retire_after == timedelta(seconds=660)


def test_leeway_alone_breaking_the_rule_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"rotation_period 300 s is shorter .* keyring\.leeway 1 s"):
        RotationSchedule(period=300, jwks_max_age=300, max_token_lifetime=600, leeway=1)


@pytest.mark.parametrize(
    ("period", "max_age", "lifetime", "leeway", "name"),
    [
        (0, 0, 600, 0, "rotation_period"),
        (3600, -1, 600, 60, "jwks_max_age"),
        (3600, 300, 0, 60, "max_token_lifetime"),
        (3600, 300, 600, -5, "leeway"),
        (float("nan"), 300, 600, 60, "rotation_period"),
        (float("inf"), 300, 600, 60, "rotation_period"),
    ],
    ids=["zero-period", "negative-max-age", "zero-lifetime", "negative-leeway", "nan", "infinite"],
)
def test_non_positive_or_non_finite_settings_are_refused(
    period: float, max_age: float, lifetime: float, leeway: float, name: str
) -> None:
    with pytest.raises(ConfigError, match=f"{name} must be a positive number of seconds"):
        RotationSchedule(period=period, jwks_max_age=max_age, max_token_lifetime=lifetime, leeway=leeway)


def test_zero_leeway_is_allowed() -> None:
    assert RotationSchedule(period=300, jwks_max_age=300, max_token_lifetime=600, leeway=0).leeway == 0


def test_zero_jwks_max_age_is_allowed_as_the_config_allows_it() -> None:
    """``[keyring] jwks_max_age = 0`` (``Cache-Control: max-age=0``: verifiers revalidate) passed the config and
    was then refused at start."""
    assert RotationSchedule(period=300, jwks_max_age=0, max_token_lifetime=600, leeway=0).jwks_max_age == 0


def test_rotation_promotes_next_retires_active_and_adds_a_fresh_next() -> None:
    keys = [record("a", A), record("n", N, 1)]
    change = plan_rotation(keys, SCHEDULE, T0 + timedelta(hours=1), fresh)
    assert set(change.moves) == {KeyMove("n", N, A), KeyMove("a", A, R)}
    assert [k.kid for k in change.adds] == ["fresh-next"]


def test_rotation_refuses_a_next_key_younger_than_max_age_plus_leeway() -> None:
    keys = [record("a", A), record("n", N, 100)]
    too_early = T0 + timedelta(seconds=100 + PUBLISH_LEAD - 1)
    with pytest.raises(RotationTooEarlyError) as caught:
        plan_rotation(keys, SCHEDULE, too_early, fresh)
    assert "jwks_max_age 300 s + leeway 60 s" in str(caught.value)
    assert (T0 + timedelta(seconds=100 + PUBLISH_LEAD)).isoformat() in str(caught.value)
    assert plan_rotation(keys, SCHEDULE, too_early + timedelta(seconds=1), fresh).moves


def test_rotation_without_a_next_key_is_refused() -> None:
    with pytest.raises(RotationTooEarlyError, match="no next key is published"):
        plan_rotation([record("a", A)], SCHEDULE, T0 + timedelta(days=1), fresh)


def test_rotation_with_two_next_keys_promotes_the_oldest_and_adds_none() -> None:
    keys = [record("a", A), record("n2", N, 5), record("n1", N, 1)]
    change = plan_rotation(keys, SCHEDULE, T0 + timedelta(hours=1), fresh)
    assert KeyMove("n1", N, A) in change.moves and change.adds == ()


def test_retiring_key_stays_until_max_lifetime_plus_leeway_after_it_stopped_signing() -> None:
    keys = [record("a", A, 10), record("r", R, 0, moved=10)]
    stopped = T0 + timedelta(seconds=10)
    assert plan_retirements(keys, SCHEDULE, stopped + timedelta(seconds=RETIRE_AFTER - 0.001)) is None
    change = plan_retirements(keys, SCHEDULE, stopped + timedelta(seconds=RETIRE_AFTER))
    assert change is not None and change.moves == (KeyMove("r", R, RD),)


def test_revoking_the_active_key_promotes_next_and_adds_a_fresh_next() -> None:
    change = plan_revocation([record("a", A), record("n", N, 1)], "a", T0, fresh)
    assert set(change.moves) == {KeyMove("a", A, RV), KeyMove("n", N, A)}
    assert [(k.kid, k.state) for k in change.adds] == [("fresh-next", N)]


def test_revoking_the_only_key_makes_a_fresh_active_and_next() -> None:
    change = plan_revocation([record("a", A)], "a", T0, fresh)
    assert change.moves == (KeyMove("a", A, RV),)
    assert {k.state for k in change.adds} == {A, N}


def test_revoking_the_next_key_replaces_it() -> None:
    change = plan_revocation([record("a", A), record("n", N, 1)], "n", T0, fresh)
    assert change.moves == (KeyMove("n", N, RV),) and [k.kid for k in change.adds] == ["fresh-next"]


def test_revoking_a_retiring_key_only_revokes_it() -> None:
    change = plan_revocation([record("a", A), record("n", N, 1), record("r", R)], "r", T0, fresh)
    assert change.moves == (KeyMove("r", R, RV),) and change.adds == ()


def test_revoking_an_unknown_kid_is_refused() -> None:
    with pytest.raises(UnknownKeyError, match=r"no signing key with kid .zz.*nothing was changed"):
        plan_revocation([record("a", A)], "zz", T0, fresh)


@pytest.mark.parametrize("state", [RV, RD], ids=["revoked", "retired"])
def test_revoking_a_key_no_longer_live_is_refused(state: KeyState) -> None:
    with pytest.raises(KeyNotLiveError, match=f"already {state} .*nothing was changed"):
        plan_revocation([record("a", A), record("x", state, moved=5)], "x", T0, fresh)
