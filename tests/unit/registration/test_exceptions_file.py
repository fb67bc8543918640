"""The api_key_exceptions section of workloads.yaml: declarations load; every error names file, line and field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from broker.registration import WorkloadsFileError, parse_workloads

HEAD = """\
trust_domain: example.org
defaults: {parent_id: spiffe://example.org/agent/test, x509_svid_ttl: 3600, jwt_svid_ttl: 300}
workloads:
  - name: web
    spiffe_id: spiffe://example.org/ns/shop/sa/web
    selectors: ["k8s:sa:web"]
api_key_exceptions:
"""
STRIPE = """\
  - name: stripe
    target: https://api.stripe.com/v1/
    owner: payments
    contact: payments-oncall@example.org
    justification: Stripe offers no workload identity federation
    ticket: SEC-1234
    expires_at: 2027-03-01T00:00:00Z
    header: {name: Authorization, template: "Bearer {secret}"}
    workloads: [web]
"""


def test_a_declared_exception_resolves_workload_names_to_their_spiffe_ids() -> None:
    declared = parse_workloads(HEAD + STRIPE + "    allowed: [spiffe://example.org/ns/batch/*]\n").api_key_exceptions
    assert len(declared) == 1
    stripe = declared[0]
    assert (stripe.name, stripe.host, stripe.port, stripe.path_prefix) == ("stripe", "api.stripe.com", 443, "/v1/")
    assert stripe.allowed == ("spiffe://example.org/ns/shop/sa/web", "spiffe://example.org/ns/batch/*")
    assert stripe.expires_at == datetime(2027, 3, 1, tzinfo=UTC)
    assert (stripe.presentation_kind, stripe.presentation_name, stripe.template) == (
        "header", "Authorization", "Bearer {secret}"
    )  # fmt: skip
    assert stripe.delivery == "inject" and stripe.review_interval_days is None
    assert stripe.where.endswith(":8")


def test_a_file_without_the_section_declares_no_exceptions() -> None:
    assert parse_workloads(HEAD.replace("api_key_exceptions:\n", "")).api_key_exceptions == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("workloads: [web]", "workloads: [api]"), r"workloads\[0\]: no workload named api"),
        (("https://api.stripe.com/v1/", "http://api.stripe.com/v1/"), r"target: must be an https URL"),
        (("https://api.stripe.com/v1/", "https://u:p@api.stripe.com/"), r"no credentials"),
        (("https://api.stripe.com/v1/", "https://api.stripe.com/v1?x=1"), r"query or fragment"),
        (("2027-03-01T00:00:00Z", "2027-03-01T00:00:00"), r"expires_at: must carry a time zone"),
        (("2027-03-01T00:00:00Z", "next year"), r"expires_at: must be an RFC 3339 time"),
        (("name: stripe", "name: Stripe_API"), r"name: must be a DNS label"),
        (('    header: {name: Authorization, template: "Bearer {secret}"}\n', ""), r"exactly one of header"),
        (("workloads: [web]", "delivery: mail"), r"delivery: must be inject or reveal"),
        (("owner: payments", "owner: payments\n    colour: red"), r"unknown key"),
        (("workloads: [web]", "allowed: [spiffe://other.org/x]"), r"must be in trust domain example.org"),
        (("workloads: [web]", "allowed: [spiffe://example.org/*]"), r"every SPIFFE ID of trust domain"),
    ],
)
def test_a_bad_declaration_names_the_line_and_field(change: tuple[str, str], message: str) -> None:
    text = HEAD + STRIPE.replace(*change)
    with pytest.raises(WorkloadsFileError, match=message) as caught:
        parse_workloads(text)
    assert caught.value.args[0].startswith("workloads.yaml:")


def test_two_declarations_of_one_name_are_refused() -> None:
    with pytest.raises(WorkloadsFileError, match="duplicate exception name stripe"):
        parse_workloads(HEAD + STRIPE + STRIPE)


def test_a_declaration_that_allows_nobody_is_refused() -> None:
    with pytest.raises(WorkloadsFileError, match="name at least one workload"):
        parse_workloads(HEAD + STRIPE.replace("    workloads: [web]\n", ""))
