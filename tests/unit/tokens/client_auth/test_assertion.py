"""Tests for broker.tokens.client_auth.assertion: the claim rules every client assertion obeys (RFC 7523 §3 as
narrowed by draft-ietf-oauth-rfc7523bis §4), and the replay record."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from broker.errors import InvalidClientError
from broker.oauth.replay import MAX_JTI_LENGTH, MemoryReplayCache, ReplayCacheUnavailable
from broker.tokens.client_auth.assertion import AssertionTimes, check_audience, check_times, jti_of, record_use

ISSUER = "https://broker.example.org"
NOW = 1_800_000_000.0
LEEWAY = 30.0


@pytest.mark.parametrize("aud", [ISSUER, [ISSUER]], ids=["string", "array-of-one"])
def test_audience_of_the_issuer_alone_is_accepted(aud: object) -> None:
    check_audience({"aud": aud}, ISSUER)


@pytest.mark.parametrize(
    ("aud", "message"),
    [
        (None, "no 'aud'"),
        (f"{ISSUER}/token", "sole value"),
        ([ISSUER, "https://other.example.org"], "sole value"),
        ([ISSUER, ISSUER], "sole value"),
        ([], "sole value"),
        (f"{ISSUER}/", "sole value"),
        ("https://BROKER.example.org", "sole value"),
        (1, "sole value"),
    ],
    ids=[
        "missing",
        "token-endpoint-url",
        "extra-audience",
        "repeated",
        "empty-array",
        "trailing-slash",
        "not-a-simple-string-match",
        "not-a-string",
    ],
)
def test_audience_other_than_the_issuer_alone_is_invalid_client(aud: object, message: str) -> None:
    claims = {} if aud is None else {"aud": aud}
    with pytest.raises(InvalidClientError) as caught:
        check_audience(claims, ISSUER)
    assert message in caught.value.description


def times(**claims: Any) -> AssertionTimes:
    return check_times(claims, now=NOW, leeway=LEEWAY, max_lifetime=60)


def test_times_within_the_rules_are_returned() -> None:
    assert times(exp=NOW + 60, iat=NOW) == AssertionTimes(exp=NOW + 60, iat=NOW)
    assert times(exp=NOW + 60 + LEEWAY) == AssertionTimes(exp=NOW + 60 + LEEWAY, iat=None)


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({}, "no 'exp'"),
        ({"exp": NOW - LEEWAY}, "expired"),
        ({"exp": "soon"}, "not a NumericDate"),
        ({"exp": True}, "not a NumericDate"),
        ({"exp": -1}, "out of range"),
        ({"exp": 1e300}, "out of range"),
        ({"exp": NOW + 30, "iat": NOW - 31}, "lifetime"),
        ({"exp": NOW + 60 + LEEWAY + 1}, "lifetime"),
        ({"exp": NOW + 60, "nbf": NOW + LEEWAY + 1}, "not yet valid"),
        ({"exp": NOW + 60, "iat": NOW + LEEWAY + 1}, "issued in the future"),
        ({"exp": NOW + 60, "iat": "now"}, "not a NumericDate"),
    ],
    ids=[
        "exp-missing",
        "expired-beyond-leeway",
        "exp-not-number",
        "exp-boolean",
        "exp-negative",
        "exp-huge",
        "lifetime-exp-minus-iat",
        "lifetime-exp-minus-now",
        "nbf-future",
        "iat-future",
        "iat-not-number",
    ],
)
def test_times_outside_the_rules_are_invalid_client(claims: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidClientError) as caught:
        times(**claims)
    assert message in caught.value.description


def test_nbf_and_iat_within_the_leeway_are_accepted() -> None:
    assert times(exp=NOW + 60, nbf=NOW + LEEWAY, iat=NOW + LEEWAY).iat == NOW + LEEWAY


@pytest.mark.parametrize(
    ("claims", "expected"),
    [({}, None), ({"jti": "a"}, "a"), ({"jti": "x" * MAX_JTI_LENGTH}, "x" * MAX_JTI_LENGTH)],
    ids=["absent", "short", "longest"],
)
def test_jti_of_returns_the_jti_when_present(claims: dict[str, Any], expected: str | None) -> None:
    assert jti_of(claims) == expected


@pytest.mark.parametrize("jti", ["", "x" * (MAX_JTI_LENGTH + 1), 7, ["a"]], ids=["empty", "long", "number", "list"])
def test_jti_of_refuses_what_is_not_a_bounded_string(jti: object) -> None:
    with pytest.raises(InvalidClientError):
        jti_of({"jti": jti})


async def test_record_use_is_true_once_until_exp_plus_leeway() -> None:
    cache = MemoryReplayCache()
    assert await record_use(cache, "k", now=NOW, exp=NOW + 10, leeway=LEEWAY)
    assert not await record_use(cache, "k", now=NOW + 10 + LEEWAY - 1, exp=NOW + 10, leeway=LEEWAY)
    assert await cache.prune(datetime.fromtimestamp(NOW + 10 + LEEWAY, UTC)) == 1


async def test_record_use_keeps_an_entry_at_least_a_second_past_now() -> None:
    cache = MemoryReplayCache()
    assert await record_use(cache, "k", now=NOW, exp=NOW - LEEWAY - 5, leeway=LEEWAY)
    assert not await record_use(cache, "k", now=NOW + 0.5, exp=NOW - LEEWAY - 5, leeway=LEEWAY)


async def test_record_use_fails_closed_when_the_cache_is_full() -> None:
    cache = MemoryReplayCache(max_entries=1)
    await record_use(cache, "a", now=NOW, exp=NOW + 10, leeway=LEEWAY)
    with pytest.raises(ReplayCacheUnavailable) as caught:
        await record_use(cache, "b", now=NOW, exp=NOW + 10, leeway=LEEWAY)
    assert caught.value.error == "temporarily_unavailable"
