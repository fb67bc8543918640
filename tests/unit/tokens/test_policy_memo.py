"""Tests for the memo of allowing decisions on broker.tokens.policy.Policy: same answers, and a reload or a
refusal is never answered from memory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker.errors import InvalidScopeError, InvalidTargetError
from broker.identity.spiffeid import SpiffeId
from broker.tokens import policy as policy_module
from broker.tokens.policy import FilePolicyStore, parse_policy

WEB = SpiffeId.parse("spiffe://example.org/ns/shop/sa/web")
API = "https://api.example.org"
ALLOWS = f"rules:\n  - spiffe_id: {WEB}\n    audiences: ['{API}']\n    scopes: ['orders:read']\n"
LONGER = ALLOWS + "    max_token_lifetime: 900\n"


def test_a_repeated_request_gets_the_remembered_grant_equal_to_a_fresh_decision() -> None:
    policy = parse_policy(ALLOWS)
    first = policy.authorize(WEB, API, frozenset({"orders:read"}))
    assert policy.authorize(WEB, API, frozenset({"orders:read"})) is first
    assert first == parse_policy(ALLOWS).authorize(WEB, API, frozenset({"orders:read"}))


@pytest.mark.parametrize(
    ("changed", "refusal"),
    [("rules: []\n", InvalidTargetError), (ALLOWS.replace("orders:read", "orders:write"), InvalidScopeError)],
    ids=["rule-removed", "scope-withdrawn"],
)
def test_a_reloaded_policy_refuses_at_the_next_request(tmp_path: Path, changed: str, refusal: type[Exception]) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ALLOWS)
    store = FilePolicyStore(path)
    store.current().authorize(WEB, API, frozenset({"orders:read"}))
    path.write_text(changed)
    os.utime(path, (1, 1))  # a new stat signature even within the same clock tick
    assert store.refresh() is True
    with pytest.raises(refusal):
        store.current().authorize(WEB, API, frozenset({"orders:read"}))


def test_a_reloaded_policy_grants_its_own_lifetime(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ALLOWS)
    store = FilePolicyStore(path)
    before = store.current().authorize(WEB, API, frozenset({"orders:read"}))
    path.write_text(LONGER)
    os.utime(path, (1, 1))
    assert store.refresh() is True
    assert store.current().authorize(WEB, API, frozenset({"orders:read"})).max_lifetime == 900 != before.max_lifetime


def test_refusals_are_decided_every_time_and_not_remembered() -> None:
    policy = parse_policy(ALLOWS)
    for _ in range(2):
        with pytest.raises(InvalidScopeError):
            policy.authorize(WEB, API, frozenset({"orders:write"}))
    assert policy._granted == {}


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy_module, "MAX_REMEMBERED_GRANTS", 3)
    policy = parse_policy(f"rules:\n  - trust_domain: example.org\n    audiences: ['{API}']\n    scopes: []\n")
    for index in range(10):
        policy.authorize(SpiffeId.parse(f"spiffe://example.org/w{index}"), API, frozenset())
        assert len(policy._granted) <= 3


def test_the_memo_takes_no_part_in_policy_equality() -> None:
    used = parse_policy(ALLOWS)
    used.authorize(WEB, API, frozenset({"orders:read"}))
    assert used == parse_policy(ALLOWS) and "_granted" not in repr(used)
