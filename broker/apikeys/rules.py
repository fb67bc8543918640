"""The governance rules an API-key exception is held to, from ``[apikeys]`` (:class:`~broker.config.ApiKeySettings`).

:meth:`GovernanceRules.check` runs on every add and every metadata change, after the model's own validator
(:func:`~broker.apikeys.model.check_exception`), in this order; the first failure is an
:class:`~broker.apikeys.errors.InvalidExceptionError` naming it, and nothing is written:

1. the model's checks (name, https target, owner, contact, justification, ticket present, allowed IDs, ...);
2. ``expires_at`` lies in the future and at most ``max_lifetime_days`` from now (a change may extend an expiry,
   never past that cap: an exception is temporary by construction);
3. ``ticket`` matches ``ticket_pattern`` as a whole (:func:`re.fullmatch`, so ``ABC-1; drop`` does not pass
   because it starts well);
4. a wildcard host (``*.example.com``) only if ``allow_wildcard_hosts``;
5. ``delivery = reveal`` (the app receives the secret) only if ``allow_reveal``.

The timing rules the grant applies (:mod:`broker.apikeys.decision`) live here too: how long an overdue review is
tolerated (``review_grace_days``), how long a rotated-out version stays usable (``rotation_grace``), how long a
sidecar may hold a granted secret (``hold_seconds``). :func:`parse_expiry` reads an expiry as RFC 3339 (§5.6, with
its offset) or as a duration from now (``90d``, ``36h``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from broker.apikeys.errors import InvalidExceptionError
from broker.apikeys.model import ApiKeyException, Delivery, check_exception
from broker.config import ApiKeySettings
from broker.errors import ConfigError

__all__ = ["GovernanceRules", "parse_expiry"]

_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)")
_DURATION = re.compile(r"([1-9]\d{0,4})([hd])")
_UNITS = {"h": 3600, "d": 86400}


def parse_expiry(text: str, now: datetime) -> datetime:
    """An RFC 3339 date-time with its offset, or ``<N>d`` / ``<N>h`` from ``now``; InvalidExceptionError else.
    Whether it lies within the lifetime cap is :meth:`GovernanceRules.check`'s business."""
    if duration := _DURATION.fullmatch(text):
        return now + timedelta(seconds=int(duration[1]) * _UNITS[duration[2]])
    if _RFC3339.fullmatch(text):
        try:
            return datetime.fromisoformat(text.upper().replace("Z", "+00:00")).astimezone(UTC)
        except (ValueError, OverflowError):
            raise InvalidExceptionError("expires_at is not a valid RFC 3339 date-time") from None
    raise InvalidExceptionError("expires_at must be RFC 3339 with its offset (2030-01-02T03:04:05Z) or 90d / 36h")


@dataclass(frozen=True, slots=True)
class GovernanceRules:
    max_lifetime: timedelta = timedelta(days=90)
    default_review_interval: timedelta = timedelta(days=30)
    review_grace: timedelta = timedelta(days=7)
    rotation_grace: timedelta = timedelta(hours=1)
    hold_time: timedelta = timedelta(seconds=60)
    ticket_pattern: re.Pattern[str] = re.compile(r"[A-Z][A-Z0-9]{1,15}-[0-9]{1,9}")
    allow_wildcard_hosts: bool = False
    allow_reveal: bool = False
    leeway: timedelta = timedelta(seconds=60)  # clock skew between replicas and sidecars (``[keyring] leeway``)

    @classmethod
    def from_settings(cls, settings: ApiKeySettings, *, leeway: float = 60.0) -> GovernanceRules:
        """The rules ``[apikeys]`` sets; a ``ticket_pattern`` that is not a regular expression is a ConfigError."""
        try:
            pattern = re.compile(settings.ticket_pattern)
        except re.error as exc:
            raise ConfigError(f"apikeys.ticket_pattern is not a regular expression: {exc.msg}") from None
        return cls(
            max_lifetime=timedelta(days=settings.max_lifetime_days),
            default_review_interval=timedelta(days=settings.default_review_days),
            review_grace=timedelta(days=settings.review_grace_days),
            rotation_grace=timedelta(seconds=settings.rotation_grace),
            hold_time=timedelta(seconds=settings.hold_seconds),
            ticket_pattern=pattern,
            allow_wildcard_hosts=settings.allow_wildcard_hosts,
            allow_reveal=settings.allow_reveal,
            leeway=timedelta(seconds=leeway),
        )

    def check(self, record: ApiKeyException, now: datetime) -> ApiKeyException:
        """``record`` if the model and these rules accept it at ``now``; see the module docstring for the order."""
        try:
            check_exception(record)
        except ValueError as exc:  # the model's words name the field, never a secret
            raise InvalidExceptionError(str(exc)) from None
        self.check_expiry(record.expires_at, now)
        if not self.ticket_pattern.fullmatch(record.ticket):
            raise InvalidExceptionError(
                f"ticket must match the configured pattern {self.ticket_pattern.pattern!r} (apikeys.ticket_pattern)"
            )
        if record.target.wildcard_host and not self.allow_wildcard_hosts:
            raise InvalidExceptionError("wildcard target hosts are not allowed here (apikeys.allow_wildcard_hosts)")
        if record.delivery is Delivery.REVEAL and not self.allow_reveal:
            raise InvalidExceptionError(
                "delivery = reveal hands the secret to the app and is not allowed here (apikeys.allow_reveal)"
            )
        return record

    def check_expiry(self, expires_at: datetime, now: datetime) -> None:
        if expires_at.tzinfo is None or expires_at.utcoffset() is None:
            raise InvalidExceptionError("expires_at must carry its UTC offset")
        if expires_at <= now:
            raise InvalidExceptionError("expires_at must lie in the future")
        if expires_at > now + self.max_lifetime:
            raise InvalidExceptionError(
                f"expires_at is more than {self.max_lifetime.days} days ahead (apikeys.max_lifetime_days): "
                "an exception is temporary; extend it later, after a review"
            )

    def review_refused(self, due: datetime, now: datetime) -> bool:
        """Whether a review due at ``due`` is overdue past the grace period at ``now`` (grants refused)."""
        return now > due + self.review_grace

    def withdrawal_until(self, now: datetime) -> datetime:
        """How long a withdrawal stays on the revocation log: the longest a sidecar holds a secret, plus leeway."""
        return now + self.hold_time + self.leeway
