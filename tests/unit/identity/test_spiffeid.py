"""SPIFFE ID and trust domain parsing (SPIFFE-ID standard §2, §2.1, §2.2, §2.3).

Static vectors live in tests/fixtures/identity/spiffe_ids.json; length-limit cases are generated here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from broker.errors import BrokerError
from broker.identity.errors import IdentityError, InvalidSpiffeIdError
from broker.identity.spiffeid import MAX_SPIFFE_ID_BYTES, MAX_TRUST_DOMAIN_BYTES, SpiffeId, TrustDomain

_VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "fixtures" / "identity" / "spiffe_ids.json").read_text(encoding="utf-8")
)
VALID = [pytest.param(v["input"], v["trust_domain"], v["path"], id=v["id"]) for v in _VECTORS["valid"]]
INVALID = [pytest.param(v["input"], id=v["id"]) for v in _VECTORS["invalid"]]

PREFIX = "spiffe://"
LONGEST_TD = "a" * MAX_TRUST_DOMAIN_BYTES


def _id_of_length(total: int) -> str:
    """A valid-looking SPIFFE ID of exactly ``total`` bytes: a short trust domain and 100-byte path segments."""
    head = PREFIX + "example.org"
    path = ""
    while len(head) + len(path) < total:
        room = total - len(head) - len(path) - 1
        path += "/" + "p" * min(100, max(room, 1))
    assert len(head + path) == total
    return head + path


LONG_VALID = [
    pytest.param(PREFIX + LONGEST_TD, id="trust-domain-of-255-bytes"),
    pytest.param(PREFIX + LONGEST_TD + "/x", id="trust-domain-of-255-bytes-with-path"),
    pytest.param(_id_of_length(MAX_SPIFFE_ID_BYTES), id="id-of-2048-bytes"),
]
LONG_INVALID = [
    pytest.param(PREFIX + LONGEST_TD + "a", id="trust-domain-of-256-bytes"),
    pytest.param(PREFIX + LONGEST_TD + "a/x", id="trust-domain-of-256-bytes-with-path"),
    pytest.param(_id_of_length(MAX_SPIFFE_ID_BYTES + 1), id="id-of-2049-bytes"),
    pytest.param(PREFIX + "example.org/" + "\u00e9" * 1100, id="id-over-2048-bytes-but-not-characters"),
]


@pytest.mark.parametrize(("value", "trust_domain", "path"), VALID)
def test_parse_accepts_valid_id(value: str, trust_domain: str, path: str) -> None:
    spiffe_id = SpiffeId.parse(value)
    assert spiffe_id.trust_domain == TrustDomain(trust_domain)
    assert spiffe_id.path == path


@pytest.mark.parametrize("value", INVALID)
def test_parse_rejects_invalid_id(value: str) -> None:
    with pytest.raises(InvalidSpiffeIdError):
        SpiffeId.parse(value)


@pytest.mark.parametrize("value", LONG_VALID)
def test_parse_accepts_ids_at_the_length_limits(value: str) -> None:
    assert str(SpiffeId.parse(value)) == value


@pytest.mark.parametrize("value", LONG_INVALID)
def test_parse_rejects_ids_over_the_length_limits(value: str) -> None:
    with pytest.raises(InvalidSpiffeIdError, match="longer than"):
        SpiffeId.parse(value)


@pytest.mark.parametrize(("value", "trust_domain", "path"), VALID)
def test_str_round_trips_valid_id(value: str, trust_domain: str, path: str) -> None:
    spiffe_id = SpiffeId.parse(value)
    assert str(spiffe_id) == value
    assert SpiffeId.parse(str(spiffe_id)) == spiffe_id
    assert SpiffeId.from_parts(trust_domain, path) == spiffe_id


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("example.org", id="bare-name"),
        pytest.param("spiffe://example.org", id="trust-domain-id"),
    ],
)
def test_trust_domain_parse_accepts_name_or_id(value: str) -> None:
    td = TrustDomain.parse(value)
    assert td == TrustDomain("example.org")
    assert td.id_string() == "spiffe://example.org"
    assert str(td) == "example.org"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("Example.org", id="uppercase"),
        pytest.param("example.org:443", id="port"),
        pytest.param("user@example.org", id="userinfo"),
        pytest.param("example.org\n", id="trailing-newline"),
        pytest.param("example.org/", id="trailing-slash"),
        pytest.param("example.org/x", id="bare-name-with-path"),
        pytest.param("spiffe://example.org/x", id="workload-id"),
        pytest.param("spiffe://example.org/", id="id-with-trailing-slash"),
        pytest.param("spiffe://", id="id-without-trust-domain"),
        pytest.param("spiffe:/example.org", id="single-slash"),
        pytest.param("spiffe:example.org", id="no-slash"),
        pytest.param("SPIFFE://example.org", id="uppercase-scheme"),
        pytest.param("https://example.org", id="other-scheme"),
        pytest.param("b\u00fccher.example", id="unicode"),
        pytest.param(LONGEST_TD + "a", id="256-bytes"),
    ],
)
def test_trust_domain_parse_rejects(value: str) -> None:
    with pytest.raises(InvalidSpiffeIdError):
        TrustDomain.parse(value)


def test_trust_domain_parse_accepts_255_bytes() -> None:
    assert TrustDomain.parse(LONGEST_TD).name == LONGEST_TD


def test_trust_domain_constructor_validates_name() -> None:
    with pytest.raises(InvalidSpiffeIdError):
        TrustDomain("spiffe://example.org")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("x", id="no-leading-slash"),
        pytest.param("/", id="root-slash"),
        pytest.param("/a/", id="trailing-slash"),
        pytest.param("/a/../b", id="dotdot"),
        pytest.param("/a?b", id="query"),
    ],
)
def test_constructor_validates_path(path: str) -> None:
    with pytest.raises(InvalidSpiffeIdError):
        SpiffeId(TrustDomain("example.org"), path)


def test_constructor_enforces_total_length() -> None:
    with pytest.raises(InvalidSpiffeIdError, match="longer than"):
        SpiffeId(TrustDomain(LONGEST_TD), "/" + "p" * (MAX_SPIFFE_ID_BYTES - len(PREFIX) - MAX_TRUST_DOMAIN_BYTES))


@pytest.mark.parametrize(
    ("path", "prefix", "expected"),
    [
        pytest.param("/ns/batch/job", "/ns/batch", True, id="child-segment"),
        pytest.param("/ns/batch/job", "/ns/batch/", True, id="child-segment-prefix-with-slash"),
        pytest.param("/ns/batch/a/b", "/ns/batch", True, id="grandchild"),
        pytest.param("/ns/batch", "/ns/batch", True, id="equal"),
        pytest.param("/ns/batch", "/ns/batch/", True, id="equal-but-prefix-has-slash"),
        pytest.param("/ns/batchjob", "/ns/batch", False, id="not-at-segment-boundary"),
        pytest.param("/ns/batchjob", "/ns/batch/", False, id="not-at-boundary-prefix-with-slash"),
        pytest.param("/ns", "/ns/batch", False, id="shorter-than-prefix"),
        pytest.param("/NS/batch", "/ns/batch", False, id="case-sensitive"),
        pytest.param("/a/b", "", True, id="empty-prefix"),
        pytest.param("/a/b", "/", True, id="root-prefix"),
        pytest.param("", "/a", False, id="trust-domain-id-against-path"),
    ],
)
def test_has_path_prefix_matches_at_segment_boundary(path: str, prefix: str, expected: bool) -> None:
    assert SpiffeId(TrustDomain("example.org"), path).has_path_prefix(prefix) is expected


def test_is_member_of_compares_trust_domain() -> None:
    spiffe_id = SpiffeId.parse("spiffe://example.org/a")
    assert spiffe_id.is_member_of(TrustDomain("example.org"))
    assert not spiffe_id.is_member_of(TrustDomain("example.org.evil"))
    assert not SpiffeId.parse("spiffe://other.test/a").is_member_of(TrustDomain("example.org"))


def test_ids_are_hashable_values() -> None:
    a = SpiffeId.parse("spiffe://example.org/a")
    assert a == SpiffeId.parse("spiffe://example.org/a")
    assert len({a, SpiffeId.parse("spiffe://example.org/a"), SpiffeId.parse("spiffe://example.org/b")}) == 2
    assert {TrustDomain("example.org"): 1}[TrustDomain.parse("spiffe://example.org")] == 1


def test_invalid_spiffe_id_error_is_an_identity_error_with_reason() -> None:
    with pytest.raises(InvalidSpiffeIdError) as info:
        SpiffeId.parse("spiffe://example.org/a/")
    assert isinstance(info.value, IdentityError)
    assert isinstance(info.value, BrokerError)
    assert info.value.reason == "invalid_spiffe_id"
    assert "trailing slash" in info.value.description


@pytest.mark.parametrize(
    ("parse", "value", "message"),
    [
        pytest.param(TrustDomain.parse, "\ud800", "trust domain characters", id="trust-domain"),
        pytest.param(TrustDomain.parse, "spiffe://\udfff", "trust domain characters", id="trust-domain-id"),
        pytest.param(SpiffeId.parse, "spiffe://\ud800/a", "trust domain characters", id="id-trust-domain"),
        pytest.param(SpiffeId.parse, "spiffe://example.org/\ud800", "path segment characters", id="id-path"),
        pytest.param(SpiffeId.parse, "\ud800spiffe://example.org/a", "scheme", id="id-before-scheme"),
    ],
)
def test_lone_surrogate_is_an_invalid_id_not_a_unicode_error(parse: Any, value: str, message: str) -> None:
    """A ``"\\ud800"`` escape in JSON or YAML gives a str that has no UTF-8 form: the rules refuse it."""
    with pytest.raises(InvalidSpiffeIdError, match=message):
        parse(value)
