"""The exception record: one validator, status derived from time and actions, exact target matching."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from broker.apikeys.model import (
    ApiKeyException,
    Presentation,
    State,
    Status,
    Target,
    check_exception,
    check_secret,
    placeholder,
    secret_aad,
    status_at,
)
from broker.events.revocations import SubjectPattern

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def record(**changes: object) -> ApiKeyException:
    base = ApiKeyException(
        name="stripe",
        target=Target("api.stripe.com", 443, "/v1/"),
        owner="payments",
        contact="payments-oncall@example.org",
        justification="no workload identity federation at Stripe",
        ticket="SEC-1234",
        expires_at=T0 + timedelta(days=60),
        review_interval=timedelta(days=30),
        allowed=(SubjectPattern.parse("spiffe://example.org/ns/shop/sa/web"),),
        presentation=Presentation("header", "Authorization", "Bearer {secret}"),
        created_at=T0,
        updated_at=T0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_complete_record_is_valid() -> None:
    assert check_exception(record()) == record()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Stripe"}, "DNS label"),
        ({"target": Target("api.stripe.com", 443, "/v1/", scheme="http")}, "https"),
        ({"target": Target("*.stripe.com")}, "exact lower-case DNS name"),
        ({"target": Target("API.stripe.com")}, "exact lower-case DNS name"),
        ({"target": Target("stripe")}, "fully qualified"),
        ({"target": Target("api.stripe.com", 0)}, "port"),
        ({"target": Target("api.stripe.com", 443, "v1")}, "path_prefix"),
        ({"target": Target("api.stripe.com", 443, "/v1?x")}, "path_prefix"),
        ({"owner": ""}, "owner"),
        ({"contact": "payments"}, "e-mail"),
        ({"justification": "because"}, "justification"),
        ({"ticket": ""}, "ticket"),
        ({"review_interval": timedelta(hours=1)}, "review_interval"),
        ({"allowed": ()}, "allowed"),
        ({"presentation": Presentation("header", "Host")}, "hop-by-hop or framing"),
        ({"presentation": Presentation("header", "X-Key", "{secret}{secret}")}, "exactly once"),
        ({"presentation": Presentation("header", "X-Key", "Bearer\r\nX: {secret}")}, "CR or LF"),
        ({"presentation": Presentation("header", "X Key")}, "RFC 9110"),
        ({"presentation": Presentation("query", "api key")}, "unreserved"),
        ({"presentation": Presentation("cookie", "k")}, "header or query"),
        ({"expires_at": T0}, "after created_at"),
        ({"expires_at": datetime(2027, 1, 1)}, "timezone-aware"),
    ],
)
def test_an_invalid_record_is_refused_naming_the_problem(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_exception(record(**changes))


def test_a_wildcard_host_is_valid_only_as_an_explicit_opt_in_and_matches_one_label() -> None:
    target = Target("*.stripe.com", wildcard_host=True)
    check_exception(record(target=target))
    assert target.matches("https", "api.stripe.com", 443, "/")
    assert not target.matches("https", "stripe.com", 443, "/")
    assert not target.matches("https", "a.b.stripe.com", 443, "/")


@pytest.mark.parametrize(
    "head",
    ["-", "-a", "a-", "a_b", "a b", "a%2e", "a@b", "a\\b", "a:1", "\u00e9", "a" * 64, "a\x00"],
    ids=["hyphen", "leading-hyphen", "trailing-hyphen", "underscore", "space", "percent", "at", "backslash", "colon",
         "non-ascii", "too-long", "nul"],
)  # fmt: skip
def test_a_wildcard_matches_only_a_dns_label_in_front_of_its_domain(head: str) -> None:
    target = Target("*.stripe.com", wildcard_host=True)
    assert target.matches("https", "a-1.stripe.com", 443, "/")
    assert target.matches("https", "a" * 63 + ".stripe.com", 443, "/")
    assert not target.matches("https", f"{head}.stripe.com", 443, "/")


def test_a_target_matches_its_exact_host_port_scheme_and_path_prefix_only() -> None:
    target = Target("api.stripe.com", 443, "/v1/")
    assert target.matches("https", "API.stripe.com.", 443, "/v1/charges")
    assert not target.matches("https", "api.stripe.com.evil.org", 443, "/v1/charges")
    assert not target.matches("https", "api.stripe.com", 8443, "/v1/charges")
    assert not target.matches("http", "api.stripe.com", 443, "/v1/charges")
    assert not target.matches("https", "api.stripe.com", 443, "/v2/charges")


def test_a_path_prefix_covers_whole_segments_only() -> None:
    target = Target("api.example.com", 443, "/v1")
    assert target.matches("https", "api.example.com", 443, "/v1")
    assert target.matches("https", "api.example.com", 443, "/v1/charges")
    assert not target.matches("https", "api.example.com", 443, "/v1-admin/users")
    assert not target.matches("https", "api.example.com", 443, "/v10")


def test_status_follows_actions_then_expiry_then_review() -> None:
    fresh = record()
    assert status_at(fresh, T0 + timedelta(days=1)) is Status.ACTIVE
    assert status_at(fresh, T0 + timedelta(days=31)) is Status.REVIEW_OVERDUE
    reviewed = replace(fresh, last_review_at=T0 + timedelta(days=29), last_review_by="spiffe://example.org/admin")
    assert status_at(reviewed, T0 + timedelta(days=31)) is Status.ACTIVE
    assert status_at(fresh, T0 + timedelta(days=60)) is Status.EXPIRED
    assert status_at(replace(fresh, state=State.SUSPENDED), T0) is Status.SUSPENDED
    assert status_at(replace(fresh, state=State.REVOKED), T0 + timedelta(days=90)) is Status.REVOKED


def test_allows_matches_exact_ids_and_prefixes_at_a_segment_boundary() -> None:
    prefix = record(allowed=(SubjectPattern.parse("spiffe://example.org/ns/shop/*"),))
    assert prefix.allows("spiffe://example.org/ns/shop/sa/web")
    assert not prefix.allows("spiffe://example.org/ns/shopping/sa/web")
    assert not prefix.allows("spiffe://example.org/ns/shop")
    assert record().allows("spiffe://example.org/ns/shop/sa/web")
    assert not record().allows("spiffe://example.org/ns/shop/sa/web/x")


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (b"", "empty"),
        (b"x" * 4097, "larger than 4096"),
        (b"sk_live\r\nX-Evil: 1", "printable ASCII"),
        (b"sk\x00", "printable ASCII"),
        ("sk_l\u00efve".encode(), "printable ASCII"),
        (b"spiffe-broker:exception/stripe", "placeholder"),
    ],
)
def test_a_secret_that_could_break_out_of_its_slot_is_refused_without_echoing_it(secret: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        check_secret(secret)
    assert "sk_l" not in str(caught.value)


def test_the_placeholder_and_associated_data_name_the_exception_and_version() -> None:
    assert placeholder("stripe") == "spiffe-broker:exception/stripe"
    assert secret_aad("stripe", 1) != secret_aad("stripe", 2) != secret_aad("stripf", 1)
    assert Presentation("header", "Authorization", "Bearer {secret}").render("k") == "Bearer k"
