"""The grant, catalog and egress-report JSON: round trips, and strict parsing that never echoes a secret."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from broker.apikeys.grant import (
    Catalog,
    CatalogEntry,
    EgressRefusal,
    EgressReport,
    Grant,
    UseCount,
    catalog_from_wire,
    catalog_to_wire,
    grant_from_wire,
    grant_to_wire,
    report_from_wire,
    report_to_wire,
)
from broker.apikeys.model import Delivery, Presentation, Target

AT = datetime(2026, 12, 2, 3, 0, 0, 500000, tzinfo=UTC)
SECRET = "sk_live_CANARY_0123456789"
GRANT = Grant("stripe", 2, SECRET, Target("api.stripe.com", 443, "/v1/"),
              Presentation("header", "Authorization", "Bearer {secret}"), Delivery.INJECT, AT, AT)  # fmt: skip


def test_a_grant_round_trips_through_json_and_its_repr_hides_the_secret() -> None:
    back = grant_from_wire(json.loads(json.dumps(grant_to_wire(GRANT))))
    assert back == GRANT
    assert SECRET not in repr(back)
    assert back.header_or_query_value() == f"Bearer {SECRET}"


@pytest.mark.parametrize(
    "change",
    [
        {"extra": 1},
        {"version": 0},
        {"version": True},
        {"secret": SECRET + "\r\nX: y"},
        {"secret": 5},
        {"delivery": "mail"},
        {"granted_at": "now"},
        {"target": {"host": "x"}},
    ],
)
def test_a_malformed_grant_is_refused_without_echoing_the_secret(change: dict[str, object]) -> None:
    wire = grant_to_wire(GRANT) | change
    with pytest.raises(ValueError) as caught:
        grant_from_wire(wire)
    assert SECRET not in str(caught.value)


def test_a_catalog_round_trips_and_carries_placeholders_but_no_secret() -> None:
    entry = CatalogEntry("stripe", GRANT.target, GRANT.presentation, Delivery.INJECT)
    wire = catalog_to_wire(Catalog((entry,)))
    assert wire["apikeys"][0]["placeholder"] == "spiffe-broker:exception/stripe"
    assert catalog_from_wire(json.loads(json.dumps(wire))) == Catalog((entry,))
    with pytest.raises(ValueError):
        catalog_from_wire({"apikeys": [wire["apikeys"][0] | {"secret": SECRET}]})


def test_a_report_round_trips_and_refuses_unknown_reasons_and_oversized_lists() -> None:
    report = EgressReport(
        (UseCount("stripe", 2, "https://api.stripe.com:443/v1/charges", 17, AT),),
        (EgressRefusal("stripe", "https://evil.example:443/", "placeholder_to_other_target", AT),),
    )
    assert report_from_wire(json.loads(json.dumps(report_to_wire(report)))) == report
    wire = report_to_wire(report)
    with pytest.raises(ValueError, match="reason"):
        report_from_wire(wire | {"refusals": [wire["refusals"][0] | {"reason": "other"}]})
    with pytest.raises(ValueError, match="at most"):
        report_from_wire(wire | {"uses": wire["uses"] * 1001})
    with pytest.raises(ValueError, match="positive"):
        report_from_wire(wire | {"uses": [wire["uses"][0] | {"count": 0}]})
