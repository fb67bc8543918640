"""Fuzzing the token endpoint over real mTLS: never a 5xx, never a token for an invalid request, no echo.

Cases come from :mod:`token_cases` (valid requests with neutral and invalidating mutations, plus byte-level
chaos); hypothesis picks the seeds and shrinks a failure to its smallest case. The canary planted in each case
must never come back in a response nor reach any log record of the process (DEBUG included).
"""

from __future__ import annotations

import json
import random
import ssl

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.token_cases import make_case
from tests.fuzz.token_service_thread import CLIENT_ID, ISSUER, ServiceThread, client_tls, send, token_service

__all__ = ["client_tls", "token_service"]  # fixtures used by name

CANARY = "CANARY-fz-91d2"
FUZZ = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _assert_no_canary(service: ServiceThread, canary: str) -> None:
    leaked = [line for line in service.logs.lines if canary in line]
    assert not leaked, leaked[:3]


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_mutated_token_requests_never_5xx_and_never_a_token_for_an_invalid_one(
    token_service: ServiceThread, client_tls: ssl.SSLContext, rng: random.Random
) -> None:
    case = make_case(rng, token_service.target(), CANARY)
    reply = send(client_tls, token_service.port, case.raw)
    assert reply.status < 500, (case.labels, reply.status)
    assert CANARY.encode() not in reply.head + reply.body, case.labels
    if case.expect == "token":
        assert reply.status == 200 and "access_token" in json.loads(reply.body), (case.labels, reply.body[:200])
    elif case.expect == "refused":
        assert 400 <= reply.status < 500 or reply.status == 0, (case.labels, reply.status)
        assert b"access_token" not in reply.body, case.labels


@FUZZ
@given(
    body=st.binary(max_size=512),
    content_type=st.sampled_from(["application/x-www-form-urlencoded", "text/plain", "", "application/json"]),
    header=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=64),
)
def test_arbitrary_bodies_and_header_values_are_never_a_server_error(
    token_service: ServiceThread, client_tls: ssl.SSLContext, body: bytes, content_type: str, header: str
) -> None:
    raw = (
        (
            f"POST /token HTTP/1.1\r\nHost: b\r\nContent-Type: {content_type}\r\nX-Value: {header}{CANARY}\r\n"
            f"Content-Length: {len(body) + len(CANARY)}\r\n\r\n"
        ).encode()
        + body
        + CANARY.encode()
    )
    reply = send(client_tls, token_service.port, raw)
    assert reply.status < 500
    assert b"access_token" not in reply.body
    assert CANARY.encode() not in reply.head + reply.body


def test_no_canary_reached_any_log(token_service: ServiceThread) -> None:
    """Runs after the fuzz tests of this module (file order): every record of the run, DEBUG included."""
    assert token_service.logs.lines, "the recorder saw nothing: the scan would prove nothing"
    _assert_no_canary(token_service, CANARY)


@pytest.mark.parametrize(
    "template",
    [
        "POST /token HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {svid}\x01\r\n\r\n",
        "POST /token HTTP/1.1\r\nHost: b\r\nX-Svid\x00: {svid}\r\n\r\n",
        "POST /token?subject_token={svid} HTTP/9.1\r\n\r\n",
        "POST /token HTTP/1.1\r\nHost: b\r\n {svid}\r\n\r\n",
        "POST /token HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n{svid}\r\n",
        "POST /token HTTP/1.1\r\nHost: b\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        "Content-Length: 5\r\nContent-Length: 6\r\n\r\nsubject_token={svid}",
    ],
    ids=["ctl-after-bearer", "nul-in-name", "bad-version", "obs-fold", "bad-chunk", "two-lengths"],
)
def test_a_real_jwt_svid_in_malformed_bytes_never_comes_back_nor_reaches_a_log(
    token_service: ServiceThread, client_tls: ssl.SSLContext, template: str
) -> None:
    svid = token_service.ca.mint_jwt_svid(CLIENT_ID, [ISSUER], ttl=300).token
    reply = send(client_tls, token_service.port, template.format(svid=svid).encode())
    assert 400 <= reply.status < 500
    assert svid.encode() not in reply.head + reply.body
    signature = svid.rsplit(".", 1)[1]
    _assert_no_canary(token_service, signature)
