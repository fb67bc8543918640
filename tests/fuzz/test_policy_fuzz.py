"""Fuzzing the policy loader: any text is a Policy or a ConfigError, never another exception or a hang.

Before: ``rules: [[[[...`` raised RecursionError from PyYAML's composer, which the loader did not catch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import ConfigError
from broker.tokens.policy import FilePolicyStore, Policy, parse_policy

GOOD = """\
rules:
  - spiffe_id: spiffe://example.org/web
    audiences: ["https://api.example.org"]
    scopes: [orders:read]
"""
PIECES = [
    "rules:", "\n", "  ", "- ", "[", "]", "{", "}", ",", ": ", "&a ", "*a", "!!python/object:os.system ",
    "!!binary ", "!!timestamp ", "spiffe_id", "trust_domain", "path_prefix", "audiences", "scopes",
    "max_token_lifetime", "spiffe://example.org/web", "example.org", "/ns", "https://api.example.org",
    "orders:read", "9" * 5000, "2001-13-45", "1e999", "-1", "0x10", "null", "~", "'", '"', "\t", "#", "---", "...",
    "%YAML 1.1\n", "? ", "|", ">", "\x00", "\ufeff", "é",
]  # fmt: skip


def _outcome(text: str) -> Policy | None:
    try:
        return parse_policy(text, source="fuzz.yaml")
    except ConfigError:
        return None


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(st.sampled_from(PIECES), max_size=60))
def test_policy_text_built_from_yaml_pieces_is_a_policy_or_a_config_error(pieces: list[str]) -> None:
    _outcome("".join(pieces))


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=300))
def test_arbitrary_policy_text_is_a_policy_or_a_config_error(text: str) -> None:
    _outcome(text)


@settings(max_examples=200, deadline=None, database=None)
@given(position=st.integers(0, len(GOOD)), insert=st.text(max_size=8))
def test_edited_valid_policy_is_a_policy_or_a_config_error(position: int, insert: str) -> None:
    _outcome(GOOD[:position] + insert + GOOD[position:])


@settings(max_examples=300, deadline=None, database=None)
@given(
    field=st.sampled_from(["spiffe_id", "trust_domain", "path_prefix", "audiences", "scopes", "max_token_lifetime"]),
    tag=st.sampled_from(["", "!!timestamp ", "!!binary ", "!!int ", "!!float ", "!!bool ", "!!set ", "!!str "]),
    value=st.one_of(st.sampled_from(PIECES), st.text(max_size=20)),
)
def test_every_rule_field_with_any_tag_and_value_is_a_policy_or_a_config_error(
    field: str, tag: str, value: str
) -> None:
    """Found by this test: ``!!timestamp nope`` raised AttributeError inside PyYAML's constructor."""
    rule = {"spiffe_id": "spiffe://example.org/web", "audiences": "[a]", field: f"{tag}{value}"}
    if field in ("trust_domain", "path_prefix"):
        rule.pop("spiffe_id")
    _outcome("rules:\n  - " + "\n    ".join(f"{k}: {v}" for k, v in rule.items()) + "\n")


@pytest.mark.parametrize(
    "text",
    [
        "rules: " + "[" * 100_000,
        "rules: " + "[" * 3000 + "]" * 3000,
        "rules: " + "{a: " * 3000 + "}" * 3000,
        "rules:\n" + "".join("  " * i + "- \n" for i in range(2000)),
        "a: &x [spiffe://example.org/web]\nrules: [{spiffe_id: *x, audiences: [x]}]",
    ],
    ids=["flow-unclosed", "flow-balanced", "mappings", "block", "alias"],
)
def test_nested_or_aliased_policy_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_policy(text, source="fuzz.yaml")


@settings(max_examples=100, deadline=None, database=None)
@given(text=st.one_of(st.text(max_size=200), st.just("rules: " + "[" * 50_000)))
def test_file_store_refresh_never_raises_and_keeps_the_last_good_policy(text: str) -> None:
    with tempfile.TemporaryDirectory(prefix="policy-fuzz-") as directory:
        path = Path(directory) / "policy.yaml"
        path.write_text(GOOD)
        store = FilePolicyStore(path)
        good = store.current()
        path.write_text(text + "\n# edited\n")
        reloaded = store.refresh()
        assert store.current() is not good if reloaded else store.current() is good
