"""The governance rules' inputs: expiries as RFC 3339 or a duration, and a ticket pattern from the configuration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.apikeys.errors import InvalidExceptionError
from broker.apikeys.rules import GovernanceRules, parse_expiry
from broker.config import ApiKeySettings
from broker.errors import ConfigError

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", NOW + timedelta(days=90)),
        ("36h", NOW + timedelta(hours=36)),
        ("2027-03-01T00:00:00Z", datetime(2027, 3, 1, tzinfo=UTC)),
        ("2027-03-01T02:00:00+02:00", datetime(2027, 3, 1, tzinfo=UTC)),
    ],
)
def test_an_expiry_is_rfc3339_with_its_offset_or_a_duration(text: str, expected: datetime) -> None:
    assert parse_expiry(text, NOW) == expected


@pytest.mark.parametrize(
    "text", ["2027-03-01", "2027-03-01T00:00:00", "0d", "90", "90m", "-1d", "soon", "2027-13-01T00:00:00Z"]
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(InvalidExceptionError, match="expires_at"):
        parse_expiry(text, NOW)


def test_a_ticket_pattern_that_is_no_regular_expression_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"apikeys\.ticket_pattern"):
        GovernanceRules.from_settings(ApiKeySettings(ticket_pattern="[A-Z"))


def test_review_grace_and_withdrawal_times() -> None:
    rules = GovernanceRules()
    due = NOW
    assert not rules.review_refused(due, NOW + timedelta(days=7))
    assert rules.review_refused(due, NOW + timedelta(days=7, seconds=1))
    assert rules.withdrawal_until(NOW) == NOW + timedelta(seconds=120)
