"""Tests for broker.oauth.urlencoded: the form parser gives what urllib.parse.parse_qs gives for ASCII bodies."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.oauth.urlencoded import parse_form

MAX = 8


def _reference(text: str) -> dict[str, list[str]] | type[Exception]:
    try:
        return parse_qs(text, keep_blank_values=True, strict_parsing=False, encoding="utf-8", errors="strict",
                        max_num_fields=MAX)  # fmt: skip
    except ValueError as exc:
        return type(exc)


def _ours(text: str) -> dict[str, list[str]] | type[Exception]:
    try:
        return parse_form(text, max_fields=MAX)
    except ValueError as exc:
        return type(exc)


# Bodies made of the characters that matter: separators, escapes (valid, broken, non-UTF-8), plus, letters.
PIECES = st.sampled_from(["&", "=", "+", "%", "%2", "%41", "%3D", "%26", "%C3%A9", "%C3", "%ff", "a", "b"])
ASCII_BODIES = st.lists(PIECES, max_size=24).map("".join) | st.text(st.characters(max_codepoint=127), max_size=40)


@given(ASCII_BODIES)
def test_parse_form_agrees_with_parse_qs_on_ascii_bodies(text: str) -> None:
    assert _ours(text) == _reference(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("a=1&&b=", {"a": ["1"], "b": [""]}),
        ("scope", {"scope": [""]}),
        ("audience=x&audience=y", {"audience": ["x", "y"]}),
        ("a=b%3Dc+d%26", {"a": ["b=c d&"]}),
        (
            urlencode({"subject_token": "eyJ.eyJ.sig", "aud": "https://api.example/é"}),
            {"subject_token": ["eyJ.eyJ.sig"], "aud": ["https://api.example/é"]},
        ),
    ],
    ids=["empty", "empty-field-skipped", "no-equals-is-blank", "repeats-kept-in-order", "plus-and-escapes", "utf8"],
)
def test_parse_form_decodes_fields(text: str, expected: dict[str, list[str]]) -> None:
    assert parse_form(text, max_fields=MAX) == expected


def test_parse_form_refuses_more_fields_than_the_bound() -> None:
    with pytest.raises(ValueError):
        parse_form("&".join(["a=1"] * (MAX + 1)), max_fields=MAX)
    assert parse_form("&".join(["a=1"] * MAX), max_fields=MAX) == {"a": ["1"] * MAX}


def test_parse_form_refuses_escapes_that_are_not_utf8() -> None:
    with pytest.raises(UnicodeDecodeError):
        parse_form("a=%ff", max_fields=MAX)
