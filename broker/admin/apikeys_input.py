"""Reading the admin API's API-key exception requests: the path's name, the body's members, the secret.

Each reader checks the type and form of one member and raises :class:`~broker.apikeys.errors.InvalidExceptionError`
(400 ``invalid_exception``) naming the member, never quoting its value: a misplaced secret must not come back in
an answer, a log line or an audit record. The governance rules (lifetime cap, ticket pattern, wildcard and reveal
opt-ins) are the registry's (:class:`~broker.apikeys.rules.GovernanceRules`), applied after these.

``secret_b64`` is RFC 4648 §4 base64 with padding, decoded strictly (``validate=True``: no whitespace or other
alphabet), at most :data:`~broker.apikeys.model.MAX_SECRET_BYTES` bytes once decoded.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from broker.admin.routes import AdminInput
from broker.apikeys.errors import InvalidExceptionError
from broker.apikeys.model import MAX_SECRET_BYTES, SECRET_SLOT, ApiKeyException, Delivery, Presentation, Target
from broker.apikeys.registry import Amendment
from broker.apikeys.rules import parse_expiry
from broker.errors import InvalidRequestError
from broker.events.revocations import SubjectPattern

__all__ = ["ADD_MEMBERS", "AMEND_MEMBERS", "amendment", "name_of", "registration", "secret_of"]

T = TypeVar("T")
ADD_MEMBERS = frozenset({"name", "target", "owner", "contact", "justification", "ticket", "expires_at",
                         "review_interval_days", "allowed", "presentation", "delivery", "secret_b64"})  # fmt: skip
AMEND_MEMBERS = frozenset({"owner", "contact", "justification", "ticket", "expires_at", "review_interval_days",
                           "allowed", "presentation", "reason"})  # fmt: skip
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_TARGET = frozenset({"scheme", "host", "port", "path_prefix", "wildcard_host"})
_PRESENTATION = frozenset({"kind", "name", "template"})
_MAX_B64 = 4 * ((MAX_SECRET_BYTES + 2) // 3)


def name_of(given: AdminInput) -> str:
    """The exception name in the path: a DNS label (the registry's names are nothing else)."""
    name = given.path["name"]
    if not _NAME.fullmatch(name):
        raise InvalidRequestError("the exception name in the path must be a DNS label (lower-case letters, digits, -)")
    return name


def _member(params: Mapping[str, Any], name: str, kind: type[T], what: str) -> T:
    value = params.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise InvalidExceptionError(f"{name} is required: {what}")
    return value


def _optional(params: Mapping[str, Any], name: str, kind: type[T], what: str) -> T | None:
    return None if params.get(name) is None else _member(params, name, kind, what)


def secret_of(params: Mapping[str, Any]) -> bytes:
    """The decoded ``secret_b64`` member (the model's own checks follow in the registry)."""
    encoded = _member(params, "secret_b64", str, "the secret as base64 (RFC 4648 §4)")
    if len(encoded) > _MAX_B64:
        raise InvalidExceptionError(f"the secret is larger than {MAX_SECRET_BYTES} bytes")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidExceptionError("secret_b64 is not base64 (RFC 4648 §4, with padding)") from None


def _target(params: Mapping[str, Any]) -> Target:
    item = _member(params, "target", dict, "an object with host and optionally port, path_prefix, wildcard_host")
    if not set(item) <= _TARGET:
        raise InvalidExceptionError(f"target takes only {', '.join(sorted(_TARGET))}")
    port = _optional(item, "port", int, "a port number")
    path = _optional(item, "path_prefix", str, "a path starting with /")
    scheme = _optional(item, "scheme", str, "https")
    wildcard = _optional(item, "wildcard_host", bool, "true or false")
    return Target(
        host=_member(item, "host", str, "the target's DNS name"),
        port=443 if port is None else port,
        path_prefix="/" if path is None else path,
        scheme="https" if scheme is None else scheme,
        wildcard_host=bool(wildcard),
    )


def _presentation(params: Mapping[str, Any]) -> Presentation:
    item = _member(params, "presentation", dict, "an object with kind (header or query), name, template")
    if not set(item) <= _PRESENTATION:
        raise InvalidExceptionError(f"presentation takes only {', '.join(sorted(_PRESENTATION))}")
    template = _optional(item, "template", str, "a value holding {secret} once")
    return Presentation(
        _member(item, "kind", str, "header or query"),
        _member(item, "name", str, "the header or query parameter name"),
        SECRET_SLOT if template is None else template,
    )


def _allowed(params: Mapping[str, Any]) -> tuple[SubjectPattern, ...]:
    items = _member(params, "allowed", list, "a list of SPIFFE IDs or prefixes (spiffe://td/path/*)")
    if not all(isinstance(item, str) for item in items) or len(items) > 100:
        raise InvalidExceptionError("allowed must be a list of at most 100 SPIFFE IDs or prefixes")
    try:  # spiffe://td/* (a whole trust domain) is refused: name the workloads
        return tuple(dict.fromkeys(SubjectPattern.parse(item) for item in items))
    except ValueError as exc:
        raise InvalidExceptionError(f"allowed: {exc}") from None


def _review(params: Mapping[str, Any]) -> timedelta | None:
    days = _optional(params, "review_interval_days", int, "a whole number of days")
    if days is not None and not 1 <= days <= 366:
        raise InvalidExceptionError("review_interval_days must be 1-366")
    return None if days is None else timedelta(days=days)


def _expiry(params: Mapping[str, Any], now: datetime) -> datetime | None:
    text = _optional(params, "expires_at", str, "RFC 3339 (2030-01-02T03:04:05Z) or a duration (90d)")
    return None if text is None else parse_expiry(text, now)


def registration(params: Mapping[str, Any], now: datetime, default_review: timedelta) -> ApiKeyException:
    """The exception in an add body (its state, review and version fields are the registry's)."""
    expires_at = _expiry(params, now)
    if expires_at is None:
        raise InvalidExceptionError("expires_at is required: RFC 3339 or a duration such as 90d")
    delivery = _optional(params, "delivery", str, "inject or reveal") or Delivery.INJECT.value
    if delivery not in (Delivery.INJECT.value, Delivery.REVEAL.value):
        raise InvalidExceptionError("delivery must be inject or reveal")
    return ApiKeyException(
        name=_member(params, "name", str, "a DNS label"),
        target=_target(params),
        owner=_member(params, "owner", str, "the owning team"),
        contact=_member(params, "contact", str, "an e-mail address"),
        justification=_member(params, "justification", str, "why a static key is still needed"),
        ticket=_member(params, "ticket", str, "the external reference (e.g. SEC-1234)"),
        expires_at=expires_at,
        review_interval=_review(params) or default_review,
        allowed=_allowed(params),
        presentation=_presentation(params),
        delivery=Delivery(delivery),
    )


def amendment(params: Mapping[str, Any], now: datetime) -> Amendment:
    """The metadata an update body changes; ``invalid_exception`` if it changes nothing."""
    found = Amendment(
        owner=_optional(params, "owner", str, "the owning team"),
        contact=_optional(params, "contact", str, "an e-mail address"),
        justification=_optional(params, "justification", str, "why a static key is still needed"),
        ticket=_optional(params, "ticket", str, "the external reference"),
        expires_at=_expiry(params, now),
        review_interval=_review(params),
        allowed=None if params.get("allowed") is None else _allowed(params),
        presentation=None if params.get("presentation") is None else _presentation(params),
    )
    if not found:
        raise InvalidExceptionError(f"give at least one of {', '.join(sorted(AMEND_MEMBERS - {'reason'}))}")
    return found
