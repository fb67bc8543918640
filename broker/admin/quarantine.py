"""Admin endpoints of quarantine (issue 10 item 4): add, release, list (:mod:`broker.tokens.quarantine`).

::

    GET  /admin/v1/quarantines           the quarantines in force: pattern, reason, since, until, cutoff_until
    POST /admin/v1/quarantines           {"pattern", "reason", "until"?, "all_of_trust_domain"?}   quarantine now
    POST /admin/v1/quarantines/release   {"pattern", "reason"?}                                      end one

Release is a POST to its own path with the pattern in the body, not ``DELETE /quarantines/{pattern}``: a pattern
is a SPIFFE ID with slashes (``spiffe://td/ns/*``), which a path segment would carry only percent-encoded, and
proxies and routers differ on decoding ``%2F`` (RFC 3986 §2.2 makes ``/`` reserved); DELETE with a body has no
defined meaning (RFC 9110 §9.3.5). So every change here takes its input the same way: a JSON body.

``pattern`` is a SPIFFE ID (that ID only) or ``spiffe://td/path/*`` (every ID under ``path/``);
``spiffe://td/*``, the whole trust domain, needs ``"all_of_trust_domain": true``. ``until`` is an RFC 3339 time
with its offset, or a duration (``30m``, ``2h``, ``7d``) from the server's clock; without it the quarantine holds
until released. ``reason`` is required to add (it goes into the audit journal and ``quarantine list``, never on
the revocation feed) and optional to release (the ``admin.call`` record keeps it).

Each bad input is refused with its own code and changes nothing: ``invalid_pattern``, ``whole_trust_domain``,
``invalid_reason``, ``invalid_until`` (400), and a member of the wrong type ``invalid_request`` (400). Releasing a
pattern with no quarantine in force is ``not_quarantined``, 404 (RFC 9110 §15.5.5: there is no such quarantine to
end; 409 would say one exists in a state that conflicts, as ``kid_already_revoked`` does for a revoked key).
Releasing takes any valid pattern, the whole trust domain included without the flag: ending a quarantine never
widens what is cut off.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from broker.admin.ports import QuarantineAdmin
from broker.admin.routes import AdminInput, AdminOutput, AdminRoute, optional_reason
from broker.admin.wire import (
    encode_time,
    quarantine_added_document,
    quarantine_released_document,
    quarantines_document,
)
from broker.errors import InvalidRequestError
from broker.events.revocations import SubjectPattern
from broker.tokens.quarantine import check_reason, parse_pattern, parse_until

__all__ = ["quarantine_routes"]

_ADD = frozenset({"pattern", "reason", "until", "all_of_trust_domain"})
_RELEASE = frozenset({"pattern", "reason"})


def _string(given: AdminInput, name: str) -> str | None:
    value = given.params.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a string")
    return value


def _required(given: AdminInput, name: str, what: str) -> str:
    value = _string(given, name)
    if value is None:
        raise InvalidRequestError(f"{name} is required: {what}")
    return value


def _pattern(given: AdminInput, *, releasing: bool = False) -> SubjectPattern:
    whole = given.params.get("all_of_trust_domain", False)
    if not isinstance(whole, bool):
        raise InvalidRequestError("all_of_trust_domain must be true or false")
    text = _required(given, "pattern", "spiffe://trust-domain/path, or spiffe://trust-domain/path/* for a subtree")
    return parse_pattern(text, all_of_trust_domain=whole or releasing)


def quarantine_routes(quarantines: QuarantineAdmin) -> tuple[AdminRoute, ...]:
    def add_input(given: AdminInput) -> tuple[SubjectPattern, str, datetime | None]:
        pattern = _pattern(given)
        reason = check_reason(_required(given, "reason", "why, for the audit journal and quarantine list"))
        until_text = _string(given, "until")
        return pattern, reason, None if until_text is None else parse_until(until_text, quarantines.now())

    def describe_add(given: AdminInput) -> dict[str, Any]:
        pattern, reason, until = add_input(given)
        return {"pattern": pattern.text, "reason": reason, "until": encode_time(until)}

    def describe_release(given: AdminInput) -> dict[str, Any]:
        detail: dict[str, Any] = {"pattern": _pattern(given, releasing=True).text}
        reason = optional_reason(given)
        if reason is not None:
            detail["reason"] = reason
        return detail

    async def list_quarantines(given: AdminInput) -> AdminOutput:
        found = await quarantines.in_force()
        return AdminOutput(quarantines_document(found), {"quarantines": len(found)})

    async def add(given: AdminInput) -> AdminOutput:
        added = await quarantines.add(*add_input(given), str(given.actor))
        audit = {"seq": added.seq, "live_tokens": added.live_tokens, "truncated": added.truncated}
        return AdminOutput(quarantine_added_document(added), audit)

    async def release(given: AdminInput) -> AdminOutput:
        released = await quarantines.release(_pattern(given, releasing=True), str(given.actor))
        return AdminOutput(quarantine_released_document(released), {"seq": released.seq})

    return (
        AdminRoute("GET", "/quarantines", list_quarantines),
        AdminRoute("POST", "/quarantines", add, params=_ADD, describe=describe_add),
        AdminRoute("POST", "/quarantines/release", release, params=_RELEASE, describe=describe_release),
    )
