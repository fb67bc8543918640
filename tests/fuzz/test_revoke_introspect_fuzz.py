"""Fuzzing ``/revoke`` (RFC 7009) and ``/introspect`` (RFC 7662) over real mTLS against the stateful token service
(SQLite store), with the invariants of :mod:`revocation_cases`: never a 5xx; ``/revoke`` answers 200 or an RFC 6749
§5.2 error document; the revocation log (read from the store after every case) changes only when a valid token is
revoked by its owner or an admin, and then by exactly that token; ``/introspect`` answers exactly
``{"active": false}`` for anything but a valid live token, and the §2.2 members for one; the canary planted in
every case, and every token the run minted, never come back in an answer nor reach a log record (DEBUG included).

Hypothesis: 150 generated cases and 100 arbitrary bodies per run (with the feed and quarantine fuzz, the fuzz
tests of issue 10 stay under a minute); ``python -m bench.fuzz_revocation_endpoints`` runs the same cases at scale.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.events.revocations import LogEntry, TokenRevoked
from tests.fuzz.revocation_cases import Kit, RevocationCase, judge, make_case
from tests.fuzz.stateful_service_thread import CALLERS, ISSUER, StatefulThread, stateful_service
from tests.fuzz.token_service_thread import Reply, send

__all__ = ["stateful_service"]  # fixture used by name

CANARY = "CANARY-rv-5e1b"
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ARBITRARY = settings(FUZZ, max_examples=100)


class Minted(list[str]):
    """Every token the run minted: none may reach a log line."""


@pytest.fixture(scope="module")
def minted() -> Minted:
    return Minted()


@pytest.fixture(scope="module")
def kit(stateful_service: StatefulThread, minted: Minted) -> Kit:
    def mint(caller: str) -> str:
        token = stateful_service.mint(caller)
        minted.append(token)
        return token

    callers = {name: str(spiffe_id) for name, spiffe_id in CALLERS.items()}
    return Kit(issuer=ISSUER, callers=callers, mint=mint, signing_key=stateful_service.signing_key)


def form_request(path: str, form: bytes, *, content_type: str = "application/x-www-form-urlencoded") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: broker.test\r\nContent-Type: {content_type}\r\n"
    return f"{head}Content-Length: {len(form)}\r\n\r\n".encode() + form


def post(service: StatefulThread, caller: str, path: str, token: str) -> Reply:
    return send(service.context(caller), service.port, form_request(path, f"token={token}".encode()))


def run_case(service: StatefulThread, case: RevocationCase) -> list[str]:
    """Send ``case`` (after revoking its token first if it says so) and judge the answer and the log."""
    if case.pre_revoke:
        assert case.token is not None and case.owner is not None
        assert post(service, case.owner, "/revoke", case.token).status == 200
    head = service.log_head()
    reply = send(service.context(case.caller), service.port, case.raw)
    problems = judge(case, reply.status, reply.head, reply.body, service.entries_after(head), CANARY)
    if case.expect == "revoked" and not problems:
        assert case.token is not None
        after = post(service, "rs", "/introspect", case.token)
        if json.loads(after.body) != {"active": False}:
            problems.append(f"revoked, yet introspection says {after.body[:80]!r}")
    return problems


def test_the_judge_catches_a_5xx_an_echo_a_log_change_and_a_leaky_inactive_answer() -> None:
    """Self-check: the invariants are not vacuous."""
    invalid = RevocationCase(b"", "introspect", "rs", "inactive", labels=("x",))
    entry = LogEntry(1, TokenRevoked("j", datetime.now(UTC) + timedelta(hours=1)))
    json_head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json"
    assert judge(invalid, 500, b"", b'{"error":"server_error"}', (), CANARY)
    assert judge(invalid, 200, json_head, f'{{"active":false,"x":"{CANARY}"}}'.encode(), (), CANARY)
    assert judge(invalid, 200, json_head, b'{"active":false}', (entry,), CANARY)
    assert judge(invalid, 200, json_head, b'{"active":false,"reason":"expired"}', (), CANARY)
    assert judge(invalid, 200, json_head, b'{"active":false}', (), CANARY) == []


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_mutated_revoke_and_introspect_requests_keep_every_invariant(
    stateful_service: StatefulThread, kit: Kit, rng: random.Random
) -> None:
    case = make_case(rng, kit, CANARY)
    assert run_case(stateful_service, case) == []


@ARBITRARY
@given(
    path=st.sampled_from(["/revoke", "/introspect"]),
    caller=st.sampled_from(["owner", "rs", "admin"]),
    body=st.binary(max_size=512),
    content_type=st.sampled_from(["application/x-www-form-urlencoded", "text/plain", "", "application/json"]),
)
def test_arbitrary_bodies_are_never_a_server_error_and_change_nothing(
    stateful_service: StatefulThread, path: str, caller: str, body: bytes, content_type: str
) -> None:
    head = stateful_service.log_head()
    reply = send(stateful_service.context(caller), stateful_service.port,
                 form_request(path, body + CANARY.encode(), content_type=content_type))  # fmt: skip
    assert reply.status < 500
    assert CANARY.encode() not in reply.head + reply.body
    assert stateful_service.entries_after(head) == ()
    if path == "/revoke" and reply.status == 200:
        assert reply.body == b""
    elif path == "/introspect" and reply.status == 200:
        assert json.loads(reply.body) == {"active": False}


def test_a_valid_token_is_revoked_only_by_its_owner_or_an_admin(stateful_service: StatefulThread) -> None:
    """The deterministic core of the fuzz verdicts: another client and a resource server get invalid_grant."""
    token = stateful_service.mint("owner")
    head = stateful_service.log_head()
    for caller in ("other", "rs", "outsider"):
        refused = post(stateful_service, caller, "/revoke", token)
        assert (refused.status, json.loads(refused.body)["error"]) == (400, "invalid_grant"), caller
    assert stateful_service.entries_after(head) == ()
    assert post(stateful_service, "admin", "/revoke", token).status == 200
    (entry,) = stateful_service.entries_after(head)
    assert isinstance(entry.event, TokenRevoked)
    assert json.loads(post(stateful_service, "rs", "/introspect", token).body) == {"active": False}


def test_no_canary_token_or_traceback_reached_any_log(stateful_service: StatefulThread, minted: Minted) -> None:
    """Runs after the fuzz tests of this module (file order): every record of the run, DEBUG included."""
    minted.append(stateful_service.mint("owner"))  # and a request of its own, for a run of this test alone
    form = f"token={minted[-1]}&token_type_hint={CANARY}".encode()
    assert send(stateful_service.context("owner"), stateful_service.port, form_request("/revoke", form)).status == 200
    log_lines = stateful_service.logs.lines
    assert any("revoked token jti=" in line for line in log_lines), "the recorder missed the service's log"
    assert [line[:200] for line in log_lines if CANARY in line] == []
    signatures = {token.rsplit(".", 1)[1] for token in minted}
    assert [line[:200] for line in log_lines if any(sig in line for sig in signatures)] == []
    assert [line[:300] for line in log_lines if "Traceback" in line or " unexpected " in line] == []
