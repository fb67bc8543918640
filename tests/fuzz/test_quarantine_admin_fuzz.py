"""Fuzzing the admin quarantine endpoints (``POST /admin/v1/quarantines`` and ``/quarantines/release``) over real
mTLS against the stateful token service (SQLite store), with mutated JSON bodies, headers and callers.

Every answer is predicted from the contract (:mod:`broker.admin.quarantine`, :mod:`broker.admin.inputs`,
:mod:`broker.admin.gate`), in the order the gate checks: no certificate 401 ``invalid_client``; not an admin 403
``access_denied``; another method 405 ``method_not_allowed``; a body that is not one small UTF-8 JSON object of known
members (query string, media type, charset, coding, size, syntax, duplicate members, ``NaN``) 400
``invalid_request``; then the members, each with its own code: a value of the wrong type ``invalid_request``, a
bad pattern ``invalid_pattern``, a whole trust domain without the flag ``whole_trust_domain``, a bad reason
``invalid_reason``, a bad ``until`` ``invalid_until``; releasing a pattern not in force 404 ``not_quarantined``.
Invariants: never a 5xx; the revocation log (read from the store after every request) changes only on a 200,
then by exactly one entry for exactly that pattern; the canary in invalid input never comes back; at the end,
``GET /admin/v1/quarantines`` lists exactly the patterns the model holds in force.

Hypothesis: 250 requests per run (about 12 s here).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.events.revocations import SubjectQuarantined, SubjectReleased
from tests.fuzz.stateful_service_thread import StatefulThread, stateful_service
from tests.fuzz.token_service_thread import send

__all__ = ["stateful_service"]  # fixture used by name

CANARY = "CANARY-qa-77e2"
FUZZ = settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ADD, RELEASE = "/admin/v1/quarantines", "/admin/v1/quarantines/release"

# Patterns by class. "td" names a trust domain only; "whole" needs all_of_trust_domain to add.
PATTERNS = {
    "valid": ["spiffe://fuzz.test/a", "spiffe://fuzz.test/a/b", "spiffe://fuzz.test/ns/*", "spiffe://fuzz.test/a/*",
              "spiffe://example.org/fuzz/x", "spiffe://example.org/fuzz/*", "spiffe://fuzz.test/a-b_c.d/e"],
    "whole": ["spiffe://fuzz.test/*", "spiffe://other.fuzz/*"],
    "invalid": ["spiffe://fuzz.test", "", "spiffe://", "spiffe://Fuzz.test/a", "spiffe://fuzz.test/a/",
                "spiffe://fuzz.test//a", "spiffe://fuzz.test/a/../b", "spiffe://fuzz.test/a/*/b", "spiffe://fuzz.test/a*",
                "http://fuzz.test/a", "spiffe://fuzz.test/\u00e9", "spiffe://fuzz.test/a%20b", CANARY,
                f"spiffe://fuzz.test/{CANARY}/ *", "spiffe://*", "spiffe://fuzz.test/*/*", " spiffe://fuzz.test/a",
                "spiffe://fuzz.test/" + "a" * 2100, "spiffe://fuzz.test/a\n", "spiffe://fuzz.test/./a"],
}  # fmt: skip
NOT_STRINGS: list[Any] = [1, 0.5, True, [], {}, ["spiffe://fuzz.test/a"]]
REASONS = ["compromised", "incident 42: key leak", "  spaced  ", "\u00e9t\u00e9", "r" * 200]
BAD_REASONS = ["", "   ", "r" * 201, f"{CANARY}\x00", f"{CANARY}\n", "\t", "\x7f", "a\u2028b"]
UNTILS = ["2h", "90m", "7d", "3650d", "99999s"]
BAD_UNTILS = ["0s", "3651d", "99999999d", "1y", "-1h", "1.5h", "", "2001-01-01T00:00:00Z", "2030-02-30T00:00:00Z",
              "2030-01-01T00:00:00", "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59-01:00", f"{CANARY}h",
              "2030-01-01T00:00:00+24:00", " 2h"]  # fmt: skip


def _rfc3339(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Model:
    """The patterns in force, as the test's requests left them."""

    in_force: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Expect:
    status: int
    error: str = ""
    op: str = ""  # "add" | "release": a 200 appends one entry for ``pattern``
    pattern: str = ""


def _members(draw: st.DrawFn, releasing: bool) -> tuple[dict[str, Any], list[str]]:
    """A body and the refusals its members earn, in the order they are checked (empty: valid). Up to two members
    are made bad (``faults``); the others take valid values, or a release's extra members (refused with the body)."""
    one = ["pattern", "pattern", "reason", "reason", "until", "until", "flag", "unknown"]
    faults = set(draw(st.sampled_from([[]] * 8 + [[f] for f in one] + [["pattern", "reason"], ["reason", "until"]])))
    body: dict[str, Any] = {}
    refusals: list[str] = []
    flags = ["absent"] if releasing else ["absent"] * 4 + ["true", "false"]  # release takes no flag
    flag = draw(st.sampled_from(["bad", "true"] if "flag" in faults else flags))
    if flag != "absent":
        body["all_of_trust_domain"] = {"true": True, "false": False, "bad": draw(st.sampled_from([1, "true", None]))}[
            flag
        ]
        refusals.append("invalid_request" if releasing or flag == "bad" else "")
    kinds = (
        ["whole", "invalid", "invalid", "invalid", "missing", "type"]
        if "pattern" in faults
        else ["valid"] * 4 + ["whole"]
    )
    kind = draw(st.sampled_from(kinds))
    if kind == "missing":
        refusals.append("invalid_request")
    else:
        body["pattern"] = draw(st.sampled_from(NOT_STRINGS if kind == "type" else PATTERNS[kind]))
        whole_refused = kind == "whole" and not releasing and flag != "true"
        refusals.append({"type": "invalid_request", "invalid": "invalid_pattern"}.get(kind, "")
                        or ("whole_trust_domain" if whole_refused else ""))  # fmt: skip
    reason = draw(
        st.sampled_from(["bad", "bad", "bad", "type", "missing", "null"] if "reason" in faults else ["valid"])
    )
    if reason != "missing":
        body["reason"] = {"valid": draw(st.sampled_from(REASONS)), "bad": draw(st.sampled_from(BAD_REASONS)),
                          "type": draw(st.sampled_from(NOT_STRINGS)), "null": None}[reason]  # fmt: skip
    refusals.append(_reason_refusal(body.get("reason"), releasing))
    valid_untils = ["absent"] if releasing else ["absent", "absent", "valid", "rfc3339", "null"]  # release: none
    until = draw(st.sampled_from(["bad", "bad", "bad", "type"] if "until" in faults else valid_untils))
    if until != "absent":
        body["until"] = {"valid": draw(st.sampled_from(UNTILS)), "rfc3339": _rfc3339(draw(st.floats(0.1, 3600))),
                         "null": None, "bad": draw(st.sampled_from(BAD_UNTILS)),
                         "type": draw(st.sampled_from(NOT_STRINGS))}[until]  # fmt: skip
        if releasing:
            refusals.insert(0, "invalid_request")  # release takes no until: refused with the body
        else:
            refusals.append({"bad": "invalid_until", "type": "invalid_request"}.get(until, ""))
    if "unknown" in faults:
        body[draw(st.sampled_from(["x", CANARY, "patterns", "Pattern"]))] = CANARY
        refusals.insert(0, "invalid_request")  # an unknown member: refused with the body, before any value
    return body, [r for r in refusals if r]


def _reason_refusal(reason: object, releasing: bool) -> str:
    """A reason is required to add (1-200 printable, not only spaces), optional to release (no control codes)."""
    if releasing:
        if reason is None:
            return ""
        ok = isinstance(reason, str) and 1 <= len(reason) <= 200 and not any(c < " " or c == "\x7f" for c in reason)
        return "" if ok else "invalid_request"
    if not isinstance(reason, str):
        return "invalid_request"
    return "" if reason.strip() and len(reason) <= 200 and reason.isprintable() else "invalid_reason"


@dataclass(frozen=True)
class Draft:
    """A generated request; :meth:`build` fills in a pattern in force if it asks for one, and predicts the answer."""

    caller: str | None
    method: str
    releasing: bool
    body: dict[str, Any]
    refusals: list[str]  # the members' refusals, in the order they are checked
    break_raw: Callable[[bytes], tuple[bool, bytes, list[str]]]  # -> (refused anyway, body, header lines)
    query: str
    in_force_pick: int | None  # release the quarantine in force at this index (of those the model holds)

    def build(self, model: Model) -> tuple[bytes, Expect]:
        body, refusals = self.body, self.refusals
        if self.in_force_pick is not None and model.in_force:
            body = {"pattern": sorted(model.in_force)[self.in_force_pick % len(model.in_force)]}
            body.update({k: v for k, v in self.body.items() if k == "reason"})
            refusals = [r for r in [_reason_refusal(body.get("reason"), True)] if r]
        refused_anyway, text, headers = self.break_raw(json.dumps(body).encode())
        path = (RELEASE if self.releasing else ADD) + self.query
        head = [f"{self.method} {path} HTTP/1.1", "Host: broker.test", *headers, f"Content-Length: {len(text)}"]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode() + text
        return raw, self._expect(model, body, refusals, refused_anyway)

    def _expect(self, model: Model, body: dict[str, Any], refusals: list[str], refused_anyway: bool) -> Expect:
        if self.caller is None:  # the gate authenticates before it looks for the route
            return Expect(401, "invalid_client")
        if self.caller != "admin":
            return Expect(403, "access_denied")
        if self.method != "POST":
            return Expect(405, "method_not_allowed")
        if self.query or refused_anyway:
            return Expect(400, "invalid_request")
        if refusals:
            return Expect(400, refusals[0])
        if self.releasing and body["pattern"] not in model.in_force:
            return Expect(404, "not_quarantined")
        return Expect(200, op="release" if self.releasing else "add", pattern=body["pattern"])


@st.composite
def admin_requests(draw: st.DrawFn) -> Draft:
    releasing = draw(st.booleans())
    body, refusals = _members(draw, releasing)
    pick = draw(st.integers(0, 100)) if releasing and not draw(st.integers(0, 2)) else None
    roll, choice = draw(st.sampled_from([9] * 10 + [0, 1, 2, 3, 4, 4])), draw(st.integers(0, 1000))
    return Draft(
        caller=draw(st.sampled_from(["admin"] * 8 + ["owner", "outsider", None])),
        method=draw(st.sampled_from(["POST"] * 12 + ["PUT", "DELETE", "PATCH"])),
        releasing=releasing,
        body=body,
        refusals=refusals,
        break_raw=lambda text: _raw(roll, choice, text),
        query=draw(st.sampled_from([""] * 15 + [f"?x={CANARY}"])),
        in_force_pick=pick,
    )


_BROKEN: list[Callable[[bytes], bytes]] = [
    lambda t: t[:-1],  # not JSON
    lambda t: b"[" + t + b"]",  # not an object
    lambda t: t.replace(b"{", b'{"reason": "x", ', 1) if b'"reason"' in t else b'{"a": 1, "a": 2}',  # duplicate
    lambda t: t.replace(b"{", b'{"until": NaN, ', 1),
    lambda t: b"[" * 5000,  # nested past the recursion limit (and past the size limit)
    lambda t: t + b" " * 4097,  # over MAX_ADMIN_BODY
    lambda t: b"\xef\xbb\xbf" + t,  # a byte order mark: RFC 8259 §8.1 says not to send one
    lambda t: t.replace(b"}", b', "x": "\xff\xfe"}', 1),  # not UTF-8
    lambda t: CANARY.encode(),
]


def _raw(roll: int, choice: int, text: bytes) -> tuple[bool, bytes, list[str]]:
    """Maybe break the body or its headers (``roll`` says how, ``choice`` which way): (refused whatever the members
    say, body, header lines)."""
    headers = ["Content-Type: application/json"]
    if roll == 0:
        media = ["text/plain", "application/json; charset=latin-1", "application/x-www-form-urlencoded", CANARY]
        return True, text, [f"Content-Type: {media[choice % len(media)]}"]
    if roll == 1:
        return True, text, [*headers, "Content-Encoding: gzip"]
    if roll in (2, 3):
        return True, _BROKEN[choice % len(_BROKEN)](text), headers
    if roll == 4:  # neutral
        extra = [["Content-Type: application/json; charset=utf-8"], [*headers, f"X-Note: {CANARY}"],
                 ["content-type: application/json", "Accept: */*"]]  # fmt: skip
        headers = extra[choice % len(extra)]
    return False, text, headers


def _admin_get(service: StatefulThread) -> list[str]:
    raw = b"GET /admin/v1/quarantines HTTP/1.1\r\nHost: broker.test\r\n\r\n"
    reply = send(service.context("admin"), service.port, raw)
    assert reply.status == 200, reply.body[:200]
    return sorted(q["pattern"] for q in json.loads(reply.body)["quarantines"])


@pytest.fixture(scope="module")
def model() -> Model:
    return Model()


@FUZZ
@given(data=st.data())
def test_mutated_admin_quarantine_requests_get_their_specific_answer_and_change_only_what_they_say(
    stateful_service: StatefulThread, model: Model, data: st.DataObject
) -> None:
    draft = data.draw(admin_requests())
    raw, expect = draft.build(model)
    head = stateful_service.log_head()
    reply = send(stateful_service.context(draft.caller), stateful_service.port, raw)
    new = stateful_service.entries_after(head)
    assert reply.status < 500, reply.body[:300]
    assert CANARY.encode() not in reply.head + reply.body
    document = json.loads(reply.body)
    assert (reply.status, document.get("error", "")) == (expect.status, expect.error), (document, raw[:600])
    if expect.status != 200:
        assert new == ()
        return
    (entry,) = new
    wanted = SubjectQuarantined if expect.op == "add" else SubjectReleased
    assert isinstance(entry.event, wanted) and entry.event.pattern.text == expect.pattern
    (model.in_force.add if expect.op == "add" else model.in_force.discard)(expect.pattern)


def test_the_quarantines_in_force_are_exactly_those_the_requests_left(
    stateful_service: StatefulThread, model: Model
) -> None:
    """After the fuzz (file order); a quarantine of a day or more cannot have ended meanwhile."""
    assert _admin_get(stateful_service) == sorted(model.in_force)


@pytest.mark.parametrize("until", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_until_whose_utc_time_overflows_is_invalid_until(stateful_service: StatefulThread, until: str) -> None:
    """Found by this fuzz: the conversion to UTC of a time at the edge of the calendar raised OverflowError (500)."""
    text = json.dumps({"pattern": "spiffe://fuzz.test/edge", "reason": "r", "until": until}).encode()
    raw = f"POST {ADD} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: {len(text)}\r\n\r\n"
    reply = send(stateful_service.context("admin"), stateful_service.port, raw.encode() + text)
    assert (reply.status, json.loads(reply.body)["error"]) == (400, "invalid_until")
