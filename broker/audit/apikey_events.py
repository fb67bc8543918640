"""The audit events of governed API-key exceptions (issue 12): ``apikey.*``.

Built from an exception's metadata only, never from a request body: the scrub of
:mod:`broker.audit._event` cannot recognise an opaque vendor key, so no field here could hold one. A secret is
named by its exception's name and its version number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from broker.audit._event import Event

__all__ = [
    "APIKEY_EVENTS",
    "ApiKeyAdded",
    "ApiKeyEgressRefused",
    "ApiKeyGranted",
    "ApiKeyRefused",
    "ApiKeyResumed",
    "ApiKeyRevealed",
    "ApiKeyReviewed",
    "ApiKeyRevokedRecorded",
    "ApiKeyRotated",
    "ApiKeySuspended",
    "ApiKeyUpdated",
    "ApiKeyUsed",
]


@dataclass(frozen=True, slots=True)
class _ApiKeyChange(Event):
    """An admin's change to a governed API-key exception (issue 12): who, which, and the fields it changed, before
    and after. The secret and its sealed bytes have no field: a version is named by number and KEK id."""

    name: str
    actor: str | None
    before: Mapping[str, Any] = field(default_factory=dict)
    after: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ApiKeyAdded(_ApiKeyChange):
    event: ClassVar[str] = "apikey.added"


@dataclass(frozen=True, slots=True)
class ApiKeyUpdated(_ApiKeyChange):
    event: ClassVar[str] = "apikey.updated"


@dataclass(frozen=True, slots=True)
class ApiKeyRotated(_ApiKeyChange):
    event: ClassVar[str] = "apikey.rotated"


@dataclass(frozen=True, slots=True)
class ApiKeySuspended(_ApiKeyChange):
    event: ClassVar[str] = "apikey.suspended"


@dataclass(frozen=True, slots=True)
class ApiKeyResumed(_ApiKeyChange):
    event: ClassVar[str] = "apikey.resumed"


@dataclass(frozen=True, slots=True)
class ApiKeyRevokedRecorded(_ApiKeyChange):
    event: ClassVar[str] = "apikey.revoked"


@dataclass(frozen=True, slots=True)
class ApiKeyReviewed(_ApiKeyChange):
    event: ClassVar[str] = "apikey.reviewed"


@dataclass(frozen=True, slots=True)
class ApiKeyRevealed(_ApiKeyChange):
    """An admin read a secret version in clear (``after`` names the version, never its value)."""

    event: ClassVar[str] = "apikey.revealed"


@dataclass(frozen=True, slots=True)
class ApiKeyGranted(Event):
    """A sidecar received version ``version`` of exception ``name``'s secret, to hold until ``hold_until``."""

    event: ClassVar[str] = "apikey.granted"
    spiffe_id: str
    name: str
    version: int
    hold_until: int  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class ApiKeyRefused(Event):
    """A grant was refused; ``reason`` is a broker code (``not_allowed``, ``suspended``, ``review_overdue`` ...)."""

    event: ClassVar[str] = "apikey.refused"
    spiffe_id: str
    name: str
    reason: str
    version: int | None = None


@dataclass(frozen=True, slots=True)
class ApiKeyEgressRefused(Event):
    """A sidecar's egress proxy refused ``count`` requests of one kind (its report, aggregated).
    ``suspected_exfiltration``: the placeholder was sent to a target the exception does not cover."""

    event: ClassVar[str] = "apikey.egress_refused"
    spiffe_id: str
    name: str | None
    target: str
    reason: str
    count: int
    first_at: int  # seconds since the epoch
    last_at: int
    suspected_exfiltration: bool = False


@dataclass(frozen=True, slots=True)
class ApiKeyUsed(Event):
    """A sidecar injected version ``version`` of ``name`` into ``count`` requests to ``target`` (``https://host:port``)
    since its previous report, the last at ``last_at``: one record per report and target, never one per request."""

    event: ClassVar[str] = "apikey.used"
    spiffe_id: str
    name: str
    version: int
    target: str
    count: int
    last_at: int  # seconds since the epoch


APIKEY_EVENTS: tuple[type[Event], ...] = (
    ApiKeyAdded, ApiKeyUpdated, ApiKeyRotated, ApiKeySuspended, ApiKeyResumed, ApiKeyRevokedRecorded, ApiKeyReviewed,
    ApiKeyRevealed, ApiKeyGranted, ApiKeyRefused, ApiKeyEgressRefused, ApiKeyUsed,
)  # fmt: skip
