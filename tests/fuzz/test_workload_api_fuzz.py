"""Fuzzing of the dev Workload API server (grpclib over a Unix socket) with raw and mutated HTTP/2 gRPC traffic.

The server runs on its own loop in a thread (:class:`WorkloadApiThread`); requests are written by a raw HTTP/2
client (``_wlapi_fuzz_h2``) that sends whatever it is given. For every input:

* the server keeps running and a valid client is served afterwards (checked after each batch);
* a complete request is answered: an HTTP error status (415 for a foreign content-type, gRPC PROTOCOL-HTTP2.md),
  or a response whose ``grpc-status`` is a defined code, never ``UNKNOWN: Internal Server Error`` (what grpclib
  sends for an exception the handler did not handle), and ``OK`` only for a well-formed request; grpclib's own
  ``UNKNOWN: Invalid grpc-timeout header`` is its choice, tolerated;
* nothing is logged at ERROR with a traceback (an unhandled exception).

The reverse direction, our client (:class:`WorkloadApiSvidSource`) against a server that sends mutated messages
(``_wlapi_fuzz_fake``), is at the end: every bad message is refused, and the last good SVID stays in use.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.devtools.devca import DevCA
from broker.devtools.workload_api import InMemoryEntryStore, RegistrationEntry, WorkloadApiServer
from broker.devtools.workload_api.thread import WorkloadApiThread
from broker.identity.bundle import JwtBundle
from broker.identity.errors import SvidUnavailableError
from broker.identity.spiffeid import TrustDomain
from broker.identity.workloadapi.pb import workload_pb2 as pb
from broker.identity.workloadapi.source import WorkloadApiSvidSource
from tests.fuzz._wlapi_fuzz_fake import (
    TD_ID,
    WEB,
    FakeWorkloadApi,
    Script,
    bad_x509_responses,
    jwks_responses,
    jwt_svid_response,
    make_jwt,
    serving,
    x509_response,
)
from tests.fuzz._wlapi_fuzz_h2 import GRPC_CODES, PREFACE, Outcome, exchange, grpc_frame, request_headers, send_raw

UNKNOWN = 2
OK = 0
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JWT_REQUEST = grpc_frame(pb.JWTSVIDRequest(audience=["https://api.example.org"]).SerializeToString())


class ErrorTracebacks(logging.Handler):
    """Collects records logged with an exception (from any thread): an unhandled error in the server."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)

    def take(self) -> list[str]:
        """The records so far, then forget them; grpcio's own "Exception deserializing message!" is not ours: the
        client gets it as an INTERNAL status."""
        records = [r for r in self.records if not (r.name == "grpc._common" and "deserializing" in r.getMessage())]
        found = [f"{r.name}: {r.getMessage()} {r.exc_info[1]!r}" if r.exc_info else r.getMessage() for r in records]
        self.records.clear()
        return found


@pytest.fixture(scope="module")
def socket_path() -> Iterator[str]:
    directory = Path(os.path.realpath("/tmp")) / f"wf-{os.getpid()}"
    directory.mkdir(mode=0o700)
    me = RegistrationEntry.of("spiffe://example.org/fuzz", [f"unix:uid:{os.geteuid()}"])
    server = WorkloadApiServer(
        ca=DevCA.ephemeral("example.org"), entries=InMemoryEntryStore([me]), socket_path=directory / "a.sock"
    )
    try:
        with WorkloadApiThread(server):
            yield str(server.socket_path)
    finally:
        directory.rmdir()


@pytest.fixture
def tracebacks() -> Iterator[ErrorTracebacks]:
    handler = ErrorTracebacks()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def assert_still_serving(path: str) -> None:
    outcome = exchange(path, request_headers("FetchJWTSVID"), JWT_REQUEST)
    assert (outcome.http_status, outcome.grpc_status) == (200, OK), outcome
    reply = pb.JWTSVIDResponse.FromString(outcome.data[5:])
    assert reply.svids[0].spiffe_id == "spiffe://example.org/fuzz"


def assert_proper_answer(outcome: Outcome, *, well_formed: bool) -> None:
    assert outcome.answered or outcome.closed, f"no answer to a complete request: {outcome}"
    if outcome.http_status is not None and outcome.http_status != 200:
        assert 400 <= outcome.http_status < 500, outcome
        return
    if outcome.headers and not (outcome.data and outcome.grpc_status is None):  # else: a stream that is open
        assert outcome.grpc_status in GRPC_CODES, outcome
        unhandled = outcome.grpc_status == UNKNOWN and outcome.grpc_message == "Internal Server Error"
        assert not unhandled, f"an unhandled server error: {outcome}"
        if not well_formed:
            assert outcome.grpc_status != OK, outcome


def test_the_checks_catch_an_unknown_status_and_a_logged_traceback(tracebacks: ErrorTracebacks) -> None:
    """Self-check: the invariants are not vacuous."""
    unknown = Outcome(headers={b":status": b"200", b"grpc-status": b"2", b"grpc-message": b"Internal Server Error"})
    with pytest.raises(AssertionError, match="unhandled"):
        assert_proper_answer(unknown, well_formed=False)
    with pytest.raises(AssertionError, match="no answer"):
        assert_proper_answer(Outcome(timed_out=True), well_formed=True)
    try:
        raise ValueError("planted")
    except ValueError:
        logging.getLogger("grpclib.server").exception("Application error")
    assert tracebacks.take() == ["grpclib.server: Application error ValueError('planted')"]


def test_a_valid_request_is_served(socket_path: str, tracebacks: ErrorTracebacks) -> None:
    assert_still_serving(socket_path)
    assert tracebacks.take() == []


def _without(name: str, method: str = "FetchJWTSVID") -> list[tuple[str, str]]:
    return [h for h in request_headers(method) if h[0] != name]


def _with(name: str, value: str, method: str = "FetchJWTSVID") -> list[tuple[str, str]]:
    return [*_without(name, method), (name, value)]


def _validate_request(token: str) -> bytes:
    return grpc_frame(pb.ValidateJWTSVIDRequest(audience="x", svid=token).SerializeToString())


_DEEP = base64.urlsafe_b64encode(b"[" * 3000).decode().rstrip("=")
CASES: list[Any] = [
    pytest.param(_without("workload.spiffe.io"), JWT_REQUEST, id="no-security-header"),
    pytest.param(_with("workload.spiffe.io", "false"), JWT_REQUEST, id="security-header-false"),
    pytest.param(
        [*request_headers("FetchJWTSVID"), ("workload.spiffe.io", "true")], JWT_REQUEST, id="security-header-twice"
    ),
    pytest.param(_with("content-type", "text/html"), JWT_REQUEST, id="foreign-content-type"),
    pytest.param(_without("content-type"), JWT_REQUEST, id="no-content-type"),
    pytest.param(_with(":path", "/SpiffeWorkloadAPI/Nope"), JWT_REQUEST, id="unknown-method"),
    pytest.param(_with(":path", "/" + "A" * 8000), JWT_REQUEST, id="huge-path"),
    pytest.param(_with(":method", "GET"), JWT_REQUEST, id="get"),
    pytest.param(request_headers("FetchJWTSVID"), None, id="no-body"),
    pytest.param(request_headers("FetchJWTSVID"), b"", id="empty-body"),
    pytest.param(
        request_headers("FetchJWTSVID"),
        b"\x00\x00",
        id="partial-prefix",
    ),
    pytest.param(request_headers("FetchJWTSVID"), grpc_frame(b""), id="empty-message-no-audience"),
    pytest.param(
        request_headers("FetchJWTSVID"),
        grpc_frame(b"\xff\xff\xff"),
        id="corrupt-protobuf",
    ),
    pytest.param(
        request_headers("FetchJWTSVID"),
        grpc_frame(b"\x12\x02\xff\xfe"),
        id="non-utf8-string-field",
    ),
    pytest.param(
        request_headers("FetchJWTSVID"),
        grpc_frame(b"abc", length=100),
        id="length-prefix-too-long",
    ),
    pytest.param(
        request_headers("FetchJWTSVID"),
        grpc_frame(b"\x12\x01x", compressed=True),
        id="compressed-flag",
    ),
    pytest.param(
        request_headers("FetchJWTSVID"),
        grpc_frame(pb.JWTSVIDRequest(audience=["x"], spiffe_id="spiffe://" + "a" * 5000).SerializeToString()),
        id="long-spiffe-id",
    ),
    pytest.param(
        request_headers("FetchJWTSVID"),
        grpc_frame(pb.JWTSVIDRequest(audience=["x"], spiffe_id="spiffe://example.org/other").SerializeToString()),
        id="not-entitled-id",
    ),
    pytest.param(request_headers("ValidateJWTSVID"), _validate_request("a.b.c"), id="validate-garbage"),
    pytest.param(
        request_headers("ValidateJWTSVID"), _validate_request(f"{_DEEP}.e30.c2ln"), id="validate-deeply-nested-header"
    ),
    pytest.param(request_headers("ValidateJWTSVID"), _validate_request("." * 20000), id="validate-dots"),
]


@pytest.mark.parametrize(("headers", "body"), CASES)
def test_malformed_request_gets_a_proper_grpc_answer(
    socket_path: str, tracebacks: ErrorTracebacks, headers: list[tuple[str, str]], body: bytes | None
) -> None:
    assert_proper_answer(exchange(socket_path, headers, body), well_formed=False)
    assert tracebacks.take() == []
    assert_still_serving(socket_path)


INTERNAL, UNIMPLEMENTED = 13, 12


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b"\x00\x00", INTERNAL, id="partial-prefix"),
        pytest.param(grpc_frame(b"\xff\xff\xff"), INTERNAL, id="corrupt-protobuf"),
        pytest.param(grpc_frame(b"\x12\x02\xff\xfe"), INTERNAL, id="non-utf8-string-field"),
        pytest.param(grpc_frame(b"abc", length=100), INTERNAL, id="length-prefix-too-long"),
        pytest.param(grpc_frame(b"\x12\x01x", compressed=True), UNIMPLEMENTED, id="compressed-flag"),
    ],
)
def test_unreadable_request_message_gets_grpc_gos_status_without_a_traceback(
    socket_path: str, tracebacks: ErrorTracebacks, caplog: pytest.LogCaptureFixture, body: bytes, status: int
) -> None:
    """gRPC statuscodes.md: "Error parsing request proto" is INTERNAL; an unsupported compression UNIMPLEMENTED."""
    with caplog.at_level(logging.DEBUG, logger="broker.devtools.workload_api"):
        outcome = exchange(socket_path, request_headers("FetchJWTSVID"), body)
    assert outcome.grpc_status == status, outcome
    assert tracebacks.take() == []
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize(
    "data",
    [b"", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", PREFACE[:10], PREFACE, PREFACE + b"\xff" * 64, b"\x00" * 4096],
    ids=["nothing", "http1", "half-preface", "preface-only", "preface-then-garbage", "zeros"],
)
def test_raw_bytes_and_abrupt_close_leave_the_server_serving(
    socket_path: str, tracebacks: ErrorTracebacks, data: bytes
) -> None:
    reply = send_raw(socket_path, data, timeout=0.5)
    assert data[:4] not in (b"GET ", b"\x00\x00\x00\x00") or b"HTTP/1.1 200" not in reply
    assert tracebacks.take() == []
    assert_still_serving(socket_path)


@pytest.mark.parametrize(
    "headers",
    [_without("te"), [*request_headers("FetchJWTSVID"), ("x-big", "a" * 60000)]],
    ids=["no-te", "60k-header"],
)
def test_tolerable_request_is_served(
    socket_path: str, tracebacks: ErrorTracebacks, headers: list[tuple[str, str]]
) -> None:
    outcome = exchange(socket_path, headers, JWT_REQUEST)
    assert_proper_answer(outcome, well_formed=True)
    assert tracebacks.take() == []


def test_stream_opened_and_abandoned_mid_message_leaves_the_server_serving(
    socket_path: str, tracebacks: ErrorTracebacks
) -> None:
    outcome = exchange(socket_path, request_headers("FetchJWTSVID"), JWT_REQUEST[:7], end_stream=False, timeout=0.3)
    assert not outcome.headers  # nothing to answer yet: the message is incomplete
    assert tracebacks.take() == []
    assert_still_serving(socket_path)


_HEADER_NAMES = st.sampled_from(
    ["content-type", "te", "workload.spiffe.io", ":path", ":authority", "grpc-encoding", "grpc-timeout", "x-a"]
)
_HEADER_VALUES = st.sampled_from(
    ["", "true", "application/grpc", "gzip", "1S", "99999999H", "-1m", "trailers"]
) | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)


@FUZZ
@given(
    method=st.sampled_from(["FetchJWTSVID", "ValidateJWTSVID", "FetchX509Bundles"]),
    overrides=st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=3),
    payload=st.binary(max_size=200),
    flag=st.sampled_from([0, 1, 0x80]),
    length_delta=st.sampled_from([0, 0, 0, -1, 1, 2**31]),
)
def test_mutated_headers_and_payloads_get_proper_grpc_answers(
    socket_path: str,
    tracebacks: ErrorTracebacks,
    method: str,
    overrides: list[tuple[str, str]],
    payload: bytes,
    flag: int,
    length_delta: int,
) -> None:
    headers = request_headers(method)
    for name, value in overrides:
        headers = [h for h in headers if h[0] != name] + [(name, value)]
    length = max(0, min(len(payload) + length_delta, 2**32 - 1))
    body = bytes([flag]) + length.to_bytes(4, "big") + payload
    outcome = exchange(socket_path, headers, body, streaming=method == "FetchX509Bundles", timeout=2.0)
    assert tracebacks.take() == []
    assert_proper_answer(outcome, well_formed=True)  # a random payload may well be a valid message


@FUZZ
@given(data=st.binary(min_size=1, max_size=512), with_preface=st.booleans())
def test_random_bytes_never_stop_the_server(
    socket_path: str, tracebacks: ErrorTracebacks, data: bytes, with_preface: bool
) -> None:
    send_raw(socket_path, (PREFACE if with_preface else b"") + data, timeout=0.2)
    assert tracebacks.take() == []


def test_server_still_serves_after_the_fuzzing(socket_path: str) -> None:
    assert_still_serving(socket_path)


# -- the reverse: our Workload API client (WorkloadApiSvidSource) against a server sending mutated messages --------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(dir="/tmp", prefix="wc-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


async def test_client_rejects_every_mutated_x509_response_and_keeps_the_last_good_svid(
    short_dir: Path, tracebacks: ErrorTracebacks, caplog: pytest.LogCaptureFixture
) -> None:
    ca = DevCA.ephemeral("example.org")
    good, other = ca.issue_x509_svid(WEB, ttl=600), ca.issue_x509_svid(WEB, ttl=600)
    bad = bad_x509_responses(ca, good, other)
    x509 = Script([x509_response(ca, good), *bad.values(), x509_response(ca, good)])
    fake = FakeWorkloadApi(
        x509=x509, jwt_bundles=Script([pb.JWTBundlesResponse(bundles={TD_ID: ca.jwks()}).SerializeToString()])
    )
    caplog.set_level(logging.DEBUG, logger="broker")
    async with serving(fake, short_dir / "a.sock") as address:
        source = WorkloadApiSvidSource(address=address, backoff_min=0.01, backoff_max=0.02)
        async with source:
            assert source.x509_svid().leaf.serial_number == good.leaf.serial_number
            x509.release.set()
            await x509.wait_served(len(bad) + 2)  # every mutated message was delivered, then the good one again
            assert source.x509_svid().leaf.serial_number == good.leaf.serial_number
            assert source.x509_svid().chain_der() == good.chain_der()
    assert tracebacks.take() == []
    rejected = [r.getMessage() for r in caplog.records if "bad response" in r.getMessage()]
    assert len(rejected) >= len(bad) - 2, rejected  # two are refused by gRPC itself (not protobuf / not UTF-8)
    text = caplog.text
    assert "PRIVATE KEY" not in text and good.key_der().hex() not in text


async def test_client_rejects_mutated_jwt_bundles_without_a_crash(short_dir: Path, tracebacks: ErrorTracebacks) -> None:
    ca = DevCA.ephemeral("example.org")
    good_bundles = pb.JWTBundlesResponse(bundles={TD_ID: ca.jwks()}).SerializeToString()
    bundles = Script([good_bundles, *jwks_responses().values(), good_bundles])
    svid = ca.issue_x509_svid(WEB, ttl=600)
    fake = FakeWorkloadApi(x509=Script([x509_response(ca, svid)]), jwt_bundles=bundles)
    async with (
        serving(fake, short_dir / "a.sock") as address,
        WorkloadApiSvidSource(address=address, backoff_min=0.01, backoff_max=0.02) as source,
    ):
        bundles.release.set()
        await bundles.wait_served(len(bundles.messages))
        jwt_bundle = source.jwt_bundles()[TrustDomain("example.org")]
        assert jwt_bundle.to_jwks() == JwtBundle.from_jwks(TrustDomain("example.org"), ca.jwks()).to_jwks()
        assert source.x509_svid().leaf.serial_number == svid.leaf.serial_number
    assert tracebacks.take() == []


_HDR = b'{"alg":"ES256","typ":"JWT"}'
MUTATED_JWT_SVIDS: list[Any] = [
    pytest.param(b"", id="empty-svid-list"),
    pytest.param(b"\xff\xff", id="not-protobuf"),
    pytest.param(jwt_svid_response("a.b"), id="two-parts"),
    pytest.param(jwt_svid_response("a.!!!.c"), id="bad-base64"),
    pytest.param(jwt_svid_response(make_jwt(_HDR, b"[1]")), id="payload-not-object"),
    pytest.param(jwt_svid_response(make_jwt(_HDR, b'{"sub":"spiffe://example.org/web","aud":"x"}')), id="no-exp"),
    pytest.param(jwt_svid_response(make_jwt(_HDR, b'{"sub":"x","aud":"a1","exp":true}')), id="bool-exp"),
    pytest.param(jwt_svid_response(make_jwt(_HDR, b'{"sub":"nope","aud":"a1","exp":4000000000}')), id="bad-sub"),
    pytest.param(jwt_svid_response(make_jwt(_HDR, b'{"sub":5,"aud":"a1","exp":4000000000}')), id="sub-number"),
    pytest.param(
        jwt_svid_response(make_jwt(_HDR, b"[" * 5000)),
        id="deeply-nested-payload",
    ),
    pytest.param(
        jwt_svid_response(make_jwt(_HDR, b'{"sub":"spiffe://example.org/web","aud":"a1","exp":1' + b"0" * 400 + b"}")),
        id="huge-exp",
    ),
    pytest.param(
        jwt_svid_response(make_jwt(_HDR, b'{"sub":"spiffe://example.org/\\ud800","aud":"a1","exp":4000000000}')),
        id="lone-surrogate-sub",
    ),
]


@pytest.mark.parametrize("reply", MUTATED_JWT_SVIDS)
async def test_client_refuses_a_mutated_jwt_svid_with_svid_unavailable(short_dir: Path, reply: bytes) -> None:
    ca = DevCA.ephemeral("example.org")
    bundles = Script([pb.JWTBundlesResponse(bundles={TD_ID: ca.jwks()}).SerializeToString()])
    good = ca.mint_jwt_svid(WEB, ["a0"], ttl=300).token
    jwt_svid = Script([jwt_svid_response(good), reply])
    fake = FakeWorkloadApi(
        x509=Script([x509_response(ca, ca.issue_x509_svid(WEB, ttl=600))]), jwt_bundles=bundles, jwt_svid=jwt_svid
    )
    async with (
        serving(fake, short_dir / "a.sock") as address,
        WorkloadApiSvidSource(address=address) as source,
    ):
        assert (await source.fetch_jwt_svid("a0")).token == good
        with pytest.raises(SvidUnavailableError) as caught:
            await source.fetch_jwt_svid("a1")
        assert good not in str(caught.value)
        assert (await source.fetch_jwt_svid("a0")).token == good  # the cached good one is unaffected
