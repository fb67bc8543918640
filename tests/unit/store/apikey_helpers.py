"""API-key exception records for the store contract suite and the at-rest test."""

from __future__ import annotations

from datetime import timedelta

from broker.apikeys.model import ApiKeyException, Presentation, Target, UseRecord
from broker.events.revocations import SubjectPattern
from tests.unit.store.helpers import T0

WEB = "spiffe://example.org/ns/shop/sa/web"
KEK = "kek-1"


def sealed(name: str, version: int = 1) -> bytes:
    """Stand-in sealed bytes, different for every row (the store keeps bytes; it never opens them)."""
    return b"SBS\x01" + f"{name}/{version}".encode() + bytes(range(256))


def exception(name: str = "stripe-payments", **changes: object) -> ApiKeyException:
    fields: dict[str, object] = {
        "name": name,
        "target": Target("api.stripe.com", path_prefix="/v1/"),
        "owner": "team-payments",
        "contact": "payments@example.org",
        "justification": "Stripe has no workload identity federation yet (vendor ticket 123)",
        "ticket": "SEC-1042",
        "expires_at": T0 + timedelta(days=90),
        "review_interval": timedelta(days=30),
        "allowed": (SubjectPattern.parse(WEB),),
        "presentation": Presentation("header", "Authorization", "Bearer {secret}"),
    }
    fields.update(changes)
    return ApiKeyException(**fields)  # type: ignore[arg-type]


def use(name: str, count: int = 1, *, minutes: int = 0, spiffe_id: str = WEB, version: int = 1,
        target: str = "https://api.stripe.com:443/v1/") -> UseRecord:  # fmt: skip
    return UseRecord(name, spiffe_id, version, target, count, T0 + timedelta(minutes=minutes))
