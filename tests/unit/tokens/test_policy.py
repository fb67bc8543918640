"""Tests for broker.tokens.policy: parsing, matching (default deny) and reloading."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from broker.errors import ConfigError, InvalidScopeError, InvalidTargetError
from broker.identity.spiffeid import SpiffeId
from broker.tokens.policy import (
    DEFAULT_TOKEN_LIFETIME,
    SENDER_BOUND,
    SINGLE_USE,
    AssertionRules,
    FilePolicyStore,
    InMemoryPolicyStore,
    Policy,
    load_policy,
    parse_policy,
    parse_scope,
)

WEB = SpiffeId.parse("spiffe://example.org/ns/shop/sa/web")
BATCH = SpiffeId.parse("spiffe://example.org/ns/batch/sa/job")
API = "https://api.example.org"

POLICY = """\
rules:
  - spiffe_id: spiffe://example.org/ns/shop/sa/web
    audiences: ["https://api.example.org"]
    scopes: ["orders:read", "orders:write"]
    max_token_lifetime: 120
  - trust_domain: example.org
    path_prefix: /ns/batch
    audiences: ["https://api.example.org", "https://reports.example.org"]
    scopes: ["reports:read"]
"""


def test_parse_policy_reads_exact_and_prefix_rules() -> None:
    policy = parse_policy(POLICY, source="p.yaml")
    exact, prefix = policy.rules
    assert exact.spiffe_id == WEB and exact.max_token_lifetime == 120 and exact.line == 2
    assert prefix.trust_domain is not None and prefix.trust_domain.name == "example.org"
    assert prefix.path_prefix == "/ns/batch" and prefix.max_token_lifetime == DEFAULT_TOKEN_LIFETIME


def test_authorize_grants_allowed_audience_and_scope_subset() -> None:
    grant = parse_policy(POLICY).authorize(WEB, API, frozenset({"orders:read"}))
    assert grant.audience == API and grant.scopes == {"orders:read"} and grant.max_lifetime == 120


def test_authorize_prefix_rule_matches_at_segment_boundary_only() -> None:
    policy = parse_policy(POLICY)
    assert policy.authorize(BATCH, API, frozenset()).max_lifetime == DEFAULT_TOKEN_LIFETIME
    with pytest.raises(InvalidTargetError):
        policy.authorize(SpiffeId.parse("spiffe://example.org/ns/batchx/sa/job"), API, frozenset())


@pytest.mark.parametrize(
    ("spiffe_id", "audience"),
    [
        (SpiffeId.parse("spiffe://example.org/ns/other"), API),
        (SpiffeId.parse("spiffe://other.org/ns/batch/sa/job"), API),
        (WEB, "https://reports.example.org"),
    ],
    ids=["no-rule-for-id", "other-trust-domain", "audience-not-listed"],
)
def test_authorize_refuses_target_by_default(spiffe_id: SpiffeId, audience: str) -> None:
    with pytest.raises(InvalidTargetError):
        parse_policy(POLICY).authorize(spiffe_id, audience, frozenset())


def test_authorize_refuses_scope_outside_rule() -> None:
    with pytest.raises(InvalidScopeError):
        parse_policy(POLICY).authorize(WEB, API, frozenset({"orders:read", "admin"}))


def test_empty_rules_deny_everything() -> None:
    with pytest.raises(InvalidTargetError):
        parse_policy("rules: []\n").authorize(WEB, API, frozenset())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [\n", "p.yaml:2: not valid YAML"),
        ("{}\n", "missing 'rules'"),
        ("rules: {}\n", "p.yaml:1: 'rules' must be a list"),
        ("rulez: []\n", "p.yaml:1: unknown field 'rulez'"),
        ("rules:\n  - audiences: [a]\n", "p.yaml:2: a rule needs exactly one of"),
        ("rules:\n  - spiffe_id: spiffe://x/y\n    trust_domain: x\n    audiences: [a]\n", "exactly one of"),
        ("rules:\n  - spiffe_id: spiffe://x/y\n", "p.yaml:2: a rule needs 'audiences'"),
        ("rules:\n  - spiffe_id: spiffe://x/y\n    audiences: []\n", "p.yaml:3: 'audiences' must not be empty"),
        ("rules:\n  - spiffe_id: spiffe://X/y\n    audiences: [a]\n", "p.yaml:2: trust domain characters"),
        ("rules:\n  - spiffe_id: spiffe://x/y\n    audiences: [a]\n    scopes: ['a b']\n", "p.yaml:4: invalid value"),
        ("rules:\n  - spiffe_id: spiffe://x/y\n    audiences: [1]\n", "p.yaml:3: 'audiences' must be a str"),
        ("rules:\n  - spiffe_id: spiffe://x/y\n    audiences: [a]\n    max_token_lifetime: 0\n", "must be 1.."),
        ("rules:\n  - spiffe_id: spiffe://x/y\n    audiences: [a]\n    max_token_lifetime: '60'\n", "must be a int"),
        ("rules:\n  - spiffe_id: spiffe://x/y\n    audiences: [a]\n    max_token_lifetime: true\n", "must be a int"),
        (
            "rules:\n  - spiffe_id: spiffe://x/y\n    audiences: [a]\n    audiences: [b]\n",
            "p.yaml:4: field 'audiences' given twice",
        ),
        ("rules:\n  - spiffe_id: spiffe://x/y\n    path_prefix: /a\n    audiences: [a]\n", "goes with 'trust_domain'"),
        (
            "rules:\n  - trust_domain: x\n    path_prefix: /a/../b\n    audiences: [a]\n",
            "p.yaml:3: path cannot contain dot",
        ),
        ("rules:\n  - spiffe_id: spiffe://x/y\n    audiences: [a]\n    extra: 1\n", "p.yaml:4: unknown field 'extra'"),
    ],
    ids=[
        "bad-yaml",
        "no-rules",
        "rules-not-list",
        "unknown-top-field",
        "no-subject",
        "two-subjects",
        "no-audiences",
        "empty-audiences",
        "bad-spiffe-id",
        "bad-scope",
        "audience-not-string",
        "zero-lifetime",
        "lifetime-string",
        "lifetime-bool",
        "duplicate-key",
        "prefix-with-spiffe-id",
        "dot-segment-prefix",
        "unknown-rule-field",
    ],
)
def test_parse_policy_rejects_broken_file_naming_line_and_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_policy(text, source="p.yaml")
    assert message in info.value.description


def test_load_policy_reports_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read policy file"):
        load_policy(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, frozenset()), ("a", {"a"}), ("b a b", {"a", "b"}), ("orders:read x/y", {"orders:read", "x/y"})],
    ids=["absent", "one", "dedup", "punctuation"],
)
def test_parse_scope_accepts_rfc6749_scope(value: str | None, expected: frozenset[str]) -> None:
    assert parse_scope(value) == expected


@pytest.mark.parametrize(
    "value",
    ["a  b", " a", "a ", 'a"b', "a\\b", "é", "a\tb"],
    ids=["double-space", "leading", "trailing", "quote", "backslash", "non-ascii", "tab"],
)
def test_parse_scope_rejects_malformed(value: str) -> None:
    with pytest.raises(InvalidScopeError):
        parse_scope(value)


def test_file_policy_store_reloads_changed_file_only_on_refresh(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules: []\n")
    store = FilePolicyStore(path)
    path.write_text(POLICY)
    assert store.current().rules == ()  # the request path never reads the file
    assert store.refresh() is True
    assert len(store.current().rules) == 2
    assert store.generation == 2
    assert store.refresh() is False  # unchanged file: nothing re-read


def test_file_policy_store_current_never_reads_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    store = FilePolicyStore(path)

    def no_io(*args: object, **kwargs: object) -> None:
        raise AssertionError("file read on the request path")

    monkeypatch.setattr("broker.tokens.policy.load_policy", no_io)
    monkeypatch.setattr("broker._files.os.stat", no_io)
    path.write_text("rules: []\n")
    assert len(store.current().rules) == 2


def test_file_policy_store_keeps_last_good_policy_when_file_breaks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    store = FilePolicyStore(path)
    good = store.current()
    path.write_text(POLICY + "  - bogus: 1\n")
    with caplog.at_level(logging.ERROR):
        assert store.refresh() is False
        assert store.current() is good
    assert store.last_error is not None and ":10: unknown field 'bogus'" in store.last_error.description
    assert "policy not reloaded" in caplog.text
    path.write_text("rules: []\n")
    assert store.refresh() is True
    assert store.current().rules == () and store.last_error is None


def test_file_policy_store_keeps_last_good_policy_when_file_vanishes(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    store = FilePolicyStore(path)
    os.unlink(path)
    assert store.refresh() is False
    assert len(store.current().rules) == 2
    assert store.last_error is not None


def test_file_policy_store_refuses_broken_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules: nope\n")
    with pytest.raises(ConfigError):
        FilePolicyStore(path)


def test_in_memory_policy_store_returns_its_policy() -> None:
    policy = Policy(rules=())
    assert InMemoryPolicyStore(policy).current() is policy


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: " + "[" * 100_000, "nested deeper than 32 levels"),
        ("rules:\n" + "".join("  " * i + "- \n" for i in range(40)), "nested deeper than 32 levels"),
        ("x: &r [spiffe://example.org/web]\nrules: [{spiffe_id: a, audiences: *r}]", "aliases are not supported"),
    ],
    ids=["flow-nesting", "block-nesting", "alias"],
)
def test_parse_is_bounded_in_depth_and_refuses_aliases(text: str, message: str) -> None:
    """Before: deep nesting raised RecursionError (PyYAML's composer recurses per level), uncaught."""
    with pytest.raises(ConfigError, match=message):
        parse_policy(text, source="p.yaml")


@pytest.mark.parametrize(
    "value",
    ["9" * 5000, "2001-13-45", "!!binary AAAA", "!!timestamp nope"],
    ids=["huge-int", "bad-date", "binary", "tag"],
)
def test_scalar_that_cannot_be_constructed_is_a_config_error(value: str) -> None:
    text = f"rules:\n  - spiffe_id: spiffe://example.org/web\n    audiences: [a]\n    max_token_lifetime: {value}\n"
    with pytest.raises(ConfigError, match="max_token_lifetime"):
        parse_policy(text, source="p.yaml")


def test_file_policy_store_refresh_survives_any_error_from_the_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    store = FilePolicyStore(path)
    good = store.current()

    def explode(path: Path) -> Policy:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("broker.tokens.policy.load_policy", explode)
    path.write_text("rules: []\n")
    with caplog.at_level(logging.ERROR):
        assert store.refresh() is False
    assert store.current() is good
    assert store.last_error is not None and "RecursionError" in store.last_error.description


# Client assertion rules (issue 11): jwt_svid_reuse and max_assertion_lifetime.

ASSERTION_POLICY = """\
rules:
  - spiffe_id: spiffe://example.org/ns/shop/sa/web
    audiences: ["https://api.example.org"]
    jwt_svid_reuse: sender-bound
    max_assertion_lifetime: 120
  - trust_domain: example.org
    path_prefix: /ns/shop
    audiences: ["https://reports.example.org"]
    max_assertion_lifetime: 30
  - trust_domain: example.org
    path_prefix: /ns/batch
    audiences: ["https://api.example.org"]
    jwt_svid_reuse: sender-bound
  - spiffe_id: spiffe://example.org/ns/batch/sa/job
    audiences: ["https://reports.example.org"]
    jwt_svid_reuse: single-use
"""
SPIRE_JOB = SpiffeId.parse("spiffe://example.org/ns/spire/sa/job")


def test_assertion_fields_are_read_per_rule() -> None:
    rule = parse_policy(ASSERTION_POLICY).rules[0]
    assert (rule.jwt_svid_reuse, rule.max_assertion_lifetime) == (SENDER_BOUND, 120)
    assert (parse_policy(POLICY).rules[0].jwt_svid_reuse, parse_policy(POLICY).rules[0].max_assertion_lifetime) == (
        None,
        None,
    )


@pytest.mark.parametrize(
    ("spiffe_id", "expected"),
    [
        (WEB, AssertionRules(reuse=SENDER_BOUND, max_lifetime=30)),
        (BATCH, AssertionRules(reuse=SINGLE_USE, max_lifetime=60)),
        (SPIRE_JOB, AssertionRules(reuse=SINGLE_USE, max_lifetime=60)),
        (SpiffeId.parse("spiffe://other.test/x"), AssertionRules()),
    ],
    ids=["sender-bound-smallest-lifetime", "single-use-wins", "no-rule-sets-them", "no-rule-matches"],
)
def test_assertion_rules_are_the_strictest_of_the_matching_rules(spiffe_id: SpiffeId, expected: AssertionRules) -> None:
    assert parse_policy(ASSERTION_POLICY).assertion_rules(spiffe_id) == expected


def test_assertion_rules_default_to_single_use_and_60_seconds() -> None:
    assert AssertionRules() == AssertionRules(reuse=SINGLE_USE, max_lifetime=60)
    assert parse_policy(POLICY).assertion_rules(WEB) == AssertionRules()


RULE = "rules:\n  - spiffe_id: spiffe://x/y\n    audiences: [a]\n"


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("jwt_svid_reuse: multi-use", "p.yaml:4: 'jwt_svid_reuse' must be single-use or sender-bound"),
        ("jwt_svid_reuse: 1", "p.yaml:4: 'jwt_svid_reuse' must be a str"),
        ("max_assertion_lifetime: 0", "p.yaml:4: 'max_assertion_lifetime' must be 1..300"),
        ("max_assertion_lifetime: 301", "p.yaml:4: 'max_assertion_lifetime' must be 1..300"),
        ("max_assertion_lifetime: '60'", "p.yaml:4: 'max_assertion_lifetime' must be a int"),
        ("max_assertion_lifetime: true", "p.yaml:4: 'max_assertion_lifetime' must be a int"),
    ],
    ids=["reuse-unknown", "reuse-not-string", "lifetime-zero", "lifetime-over-cap", "lifetime-string", "lifetime-bool"],
)
def test_broken_assertion_fields_name_line_and_field(field: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_policy(f"{RULE}    {field}\n", source="p.yaml")
    assert message in info.value.description


@pytest.mark.parametrize("value", [1, 300], ids=["shortest", "longest"])
def test_assertion_lifetime_bounds_are_inclusive(value: int) -> None:
    assert parse_policy(f"{RULE}    max_assertion_lifetime: {value}\n").rules[0].max_assertion_lifetime == value
