"""WorkloadApiSvidSource: the asyncio Workload API client, against the dev Workload API server."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from spiffe._proto import workload_pb2 as pb

from broker.devtools.devca import DevCA
from broker.devtools.workload_api import (
    InMemoryEntryStore,
    RegistrationEntry,
    Selector,
    WorkloadApiServer,
    WorkloadApiThread,
)
from broker.errors import ConfigError
from broker.identity.errors import IdentityError, SvidUnavailableError
from broker.identity.source import SvidSource
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.identity.workloadapi.source import (
    WorkloadApiSvidSource,
    jwt_bundles_from_response,
    jwt_svid_from_token,
    normalize_address,
    workload_api_address,
    x509_context_from_response,
)
from broker.testing import ManualClock
from tests.unit.identity.wlapi_helpers import StallMeter, WorkloadApiProcess, eventually

TD = TrustDomain("example.org")
WORKLOAD = SpiffeId.parse("spiffe://example.org/ns/shop/sa/web")
LOGGER = "broker.identity.workloadapi.source"


@pytest.fixture
def tmp_socket_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(dir="/tmp", prefix="wls")
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- address ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("unix:///run/spire/agent.sock", "unix:///run/spire/agent.sock"),
        ("/run/spire/agent.sock", "unix:///run/spire/agent.sock"),
        ("tcp://127.0.0.1:8081", "tcp://127.0.0.1:8081"),
    ],
    ids=["unix-url", "bare-absolute-path", "tcp-ip-port"],
)
def test_normalize_address_accepts_workload_endpoint_forms(given: str, expected: str) -> None:
    assert normalize_address(given) == expected


@pytest.mark.parametrize(
    "given",
    ["run/agent.sock", "unix://relative/agent.sock", "http://127.0.0.1:8081", "tcp://agent:8081", "unix:///a?x=1"],
    ids=["relative-path", "unix-with-authority", "http-scheme", "tcp-hostname", "unix-with-query"],
)
def test_normalize_address_rejects_other_forms(given: str) -> None:
    with pytest.raises(ConfigError, match="Workload Endpoint"):
        normalize_address(given)


def test_workload_api_address_prefers_configured_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", "unix:///from/env.sock")
    assert workload_api_address("/configured.sock") == "unix:///configured.sock"


def test_workload_api_address_falls_back_to_spiffe_endpoint_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", "unix:///from/env.sock")
    assert workload_api_address(None) == "unix:///from/env.sock"


def test_workload_api_address_without_config_or_env_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPIFFE_ENDPOINT_SOCKET", raising=False)
    with pytest.raises(ConfigError, match="SPIFFE_ENDPOINT_SOCKET"):
        workload_api_address(None)


# -- conversion of Workload API messages ----------------------------------------------------------------------


def _x509_message(ca: DevCA, spiffe_id: SpiffeId = WORKLOAD, *, key_der: bytes | None = None) -> pb.X509SVID:
    svid = ca.issue_x509_svid(spiffe_id, ttl=600)
    return pb.X509SVID(
        spiffe_id=str(spiffe_id),
        x509_svid=svid.chain_der(),
        x509_svid_key=svid.key_der() if key_der is None else key_der,
        bundle=ca.x509_bundle().to_der(),
    )


def test_x509_context_takes_first_svid_and_own_and_federated_bundles(ca: DevCA) -> None:
    other = DevCA.ephemeral("other.org")
    response = pb.X509SVIDResponse(
        svids=[_x509_message(ca), _x509_message(ca, SpiffeId.parse("spiffe://example.org/second"))],
        federated_bundles={"spiffe://other.org": other.x509_bundle().to_der()},
    )
    svid, bundles = x509_context_from_response(response)
    assert svid.spiffe_id == WORKLOAD
    assert bundles[TD].authorities == (ca.ca_cert,)
    assert bundles[TrustDomain("other.org")].authorities == (other.ca_cert,)


def test_x509_context_rejects_key_that_does_not_match_leaf(ca: DevCA) -> None:
    foreign_key = ca.issue_x509_svid(WORKLOAD, ttl=60).key_der()
    with pytest.raises(IdentityError, match="does not match"):
        x509_context_from_response(pb.X509SVIDResponse(svids=[_x509_message(ca, key_der=foreign_key)]))


def test_x509_context_rejects_svid_whose_leaf_names_another_id(ca: DevCA) -> None:
    message = _x509_message(ca)
    message.spiffe_id = "spiffe://example.org/someone-else"
    with pytest.raises(IdentityError, match="URI SAN"):
        x509_context_from_response(pb.X509SVIDResponse(svids=[message]))


def test_x509_context_rejects_response_without_svids() -> None:
    with pytest.raises(IdentityError, match="no SVID"):
        x509_context_from_response(pb.X509SVIDResponse())


def test_jwt_bundles_are_parsed_from_raw_jwks_keeping_use(ca: DevCA) -> None:
    bundles = jwt_bundles_from_response(pb.JWTBundlesResponse(bundles={"spiffe://example.org": ca.jwks()}))
    authority = bundles[TD].authorities[ca.jwt_kid]
    assert authority.use == "jwt-svid"


def _unsigned(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'ES256', 'typ': 'JWT'})}.{part(claims)}.c2ln"


def test_jwt_svid_from_token_reads_subject_audience_and_expiry(ca: DevCA) -> None:
    token = ca.mint_jwt_svid(WORKLOAD, ["https://api.example.org", "other"], ttl=300).token
    svid = jwt_svid_from_token(token, "https://api.example.org")
    assert (svid.spiffe_id, svid.audience) == (WORKLOAD, ("https://api.example.org", "other"))
    assert svid.token == token
    assert token not in repr(svid)


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        _unsigned({"sub": str(WORKLOAD), "aud": "someone-else", "exp": 2_000_000_000}),
        _unsigned({"sub": str(WORKLOAD), "aud": "a", "exp": "soon"}),
        _unsigned({"sub": "https://not-spiffe", "aud": "a", "exp": 2_000_000_000}),
    ],
    ids=["not-jws", "other-audience", "exp-not-int", "sub-not-spiffe-id"],
)
def test_jwt_svid_from_token_rejects_unusable_tokens(token: str) -> None:
    with pytest.raises(IdentityError):
        jwt_svid_from_token(token, "a")


# -- without a server ------------------------------------------------------------------------------------------


async def test_wait_ready_without_server_times_out_naming_the_socket(tmp_socket_dir: str) -> None:
    address = f"unix://{tmp_socket_dir}/agent.sock"
    source = WorkloadApiSvidSource(address=address, backoff_min=0.05, backoff_max=0.2)
    try:
        with pytest.raises(SvidUnavailableError) as caught:
            await source.wait_ready(0.5)
        message = str(caught.value)
        assert f"no X.509-SVID from the Workload API at {address} within 0.5s" in message
        assert "is the agent running and is this workload registered?" in message
        assert "UNAVAILABLE" in message
        with pytest.raises(SvidUnavailableError, match=r"no X\.509-SVID"):
            source.x509_svid()
    finally:
        await source.aclose()


async def test_source_satisfies_the_svid_source_protocol(tmp_socket_dir: str) -> None:
    source = WorkloadApiSvidSource(address=f"{tmp_socket_dir}/agent.sock")
    assert isinstance(source, SvidSource)
    await source.aclose()


async def _assert_no_thread_left(before: set[threading.Thread]) -> None:
    """The source's own threads are joined by aclose(); gRPC's channel thread ends moments after the channel closes."""

    def new() -> set[str]:
        return {t.name for t in threading.enumerate() if t not in before}

    assert {name for name in new() if name.startswith("wlapi-client-")} == set()
    await eventually(lambda: not new(), timeout=1.0, what=f"threads {new()} to end")


async def test_aclose_stops_every_thread_promptly(tmp_socket_dir: str) -> None:
    before = set(threading.enumerate())
    source = WorkloadApiSvidSource(address=f"{tmp_socket_dir}/agent.sock", backoff_min=0.01, backoff_max=0.05)
    await source.start()
    await eventually(lambda: source.state == "waiting", what="a failed attempt")
    started = time.monotonic()
    await source.aclose()
    assert time.monotonic() - started < 1.0
    await _assert_no_thread_left(before)
    with pytest.raises(SvidUnavailableError, match="closed"):
        await source.start()


# -- against the dev Workload API -------------------------------------------------------------------------------


def _entry_for(uid: int) -> RegistrationEntry:
    return RegistrationEntry(WORKLOAD, frozenset({Selector("uid", uid)}), jwt_svid_ttl=300)


async def _serve(ca: DevCA, directory: str, uid: int) -> AsyncIterator[WorkloadApiServer]:
    """The dev server on its own loop in a thread. Tests close their source before it stops."""
    store = InMemoryEntryStore([_entry_for(uid)])
    server = WorkloadApiServer(ca=ca, entries=store, socket_path=Path(directory) / "agent.sock")
    thread = WorkloadApiThread(server)
    await asyncio.to_thread(thread.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(thread.stop)


@pytest.fixture
async def server(ca: DevCA, tmp_socket_dir: str) -> AsyncIterator[WorkloadApiServer]:
    async for running in _serve(ca, tmp_socket_dir, os.getuid()):
        yield running


@pytest.fixture
async def server_for_someone_else(ca: DevCA, tmp_socket_dir: str) -> AsyncIterator[WorkloadApiServer]:
    async for running in _serve(ca, tmp_socket_dir, os.getuid() + 1):
        yield running


@pytest.fixture
async def process(tmp_socket_dir: str) -> AsyncIterator[WorkloadApiProcess]:
    child = WorkloadApiProcess(Path(tmp_socket_dir), WORKLOAD)
    try:
        yield child
    finally:
        await child.stop()


def _fast(address: str, clock: Callable[[], float] = time.time) -> WorkloadApiSvidSource:
    """A source that retries quickly, for tests."""
    return WorkloadApiSvidSource(address=address, backoff_min=0.05, backoff_max=0.2, clock=clock)


async def test_source_gets_svid_bundles_and_jwt_svid_from_dev_workload_api(
    ca: DevCA, server: WorkloadApiServer
) -> None:
    async with _fast(server.address) as source:
        svid = source.x509_svid()
        assert svid.spiffe_id == WORKLOAD
        svid.leaf.verify_directly_issued_by(ca.ca_cert)
        assert source.x509_bundles()[TD].authorities == (ca.ca_cert,)
        assert source.jwt_bundles()[TD].authorities[ca.jwt_kid].use == "jwt-svid"  # py-spiffe would drop `use`
        jwt_svid = await source.fetch_jwt_svid("https://api.example.org")
        assert (jwt_svid.spiffe_id, jwt_svid.audience) == (WORKLOAD, ("https://api.example.org",))
        verified = jwt.decode(jwt_svid.token, ECKey.import_key(ca.jwt_key.public_key()), algorithms=["ES256"])
        assert verified.claims["sub"] == str(WORKLOAD)
        assert source.state == "connected"


async def test_wait_ready_for_unregistered_workload_names_socket_and_permission_denied(
    server_for_someone_else: WorkloadApiServer,
) -> None:
    address = server_for_someone_else.address
    source = _fast(address)
    try:
        with pytest.raises(SvidUnavailableError) as caught:
            await source.wait_ready(0.5)
        assert f"no X.509-SVID from the Workload API at {address} within 0.5s" in str(caught.value)
        assert "PERMISSION_DENIED" in str(caught.value)
        with pytest.raises(SvidUnavailableError, match="PERMISSION_DENIED"):
            await source.fetch_jwt_svid("https://api.example.org")
    finally:
        await source.aclose()


async def test_rotation_pushed_by_server_notifies_subscribers_on_the_loop(server: WorkloadApiServer) -> None:
    loop = asyncio.get_running_loop()
    seen: list[tuple[bool, int]] = []
    async with _fast(server.address) as source:
        first = source.x509_svid().leaf.serial_number
        unsubscribe = source.subscribe(
            lambda: seen.append((asyncio.get_running_loop() is loop, source.x509_svid().leaf.serial_number))
        )
        server.rotate_now()
        await eventually(lambda: bool(seen), what="a rotation notice")
        assert seen == [(True, seen[0][1])]
        assert seen[0][1] != first
        unsubscribe()
        server.rotate_now()
        await eventually(lambda: source.x509_svid().leaf.serial_number != seen[0][1], what="the second rotation")
        assert len(seen) == 1


async def test_jwt_svid_is_cached_per_audience_until_half_its_lifetime(server: WorkloadApiServer) -> None:
    clock = ManualClock(time.time())
    async with _fast(server.address, clock=clock) as source:
        first, concurrent = await asyncio.gather(source.fetch_jwt_svid("aud-a"), source.fetch_jwt_svid("aud-a"))
        assert concurrent is first
        other = await source.fetch_jwt_svid("aud-b")
        assert other.token != first.token
        clock.advance(149)  # lifetime 300 s: still within the first half
        assert await source.fetch_jwt_svid("aud-a") is first
        clock.advance(2)
        refreshed = await source.fetch_jwt_svid("aud-a")
        assert refreshed.token != first.token


async def test_source_keeps_last_svid_while_api_is_down_and_takes_new_one_after_restart_without_stalling_loop(
    process: WorkloadApiProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    def retries() -> int:
        return sum("retrying in" in r.getMessage() for r in caplog.records)

    await process.start()
    async with _fast(process.address) as source, StallMeter() as meter:
        first = source.x509_svid()
        await process.stop()
        await eventually(lambda: source.state == "disconnected", what="the disconnect")
        before = retries()
        await eventually(lambda: retries() >= before + 3, what="several reconnection attempts")
        assert source.x509_svid() is first
        await process.start()
        await eventually(lambda: source.x509_svid() is not first, what="the SVID from the restarted server")
        assert source.x509_svid().leaf.serial_number != first.leaf.serial_number
        source.x509_svid().leaf.verify_directly_issued_by(process.ca().ca_cert)
        await eventually(lambda: source.state == "connected", what="both streams back")
    assert meter.longest < 0.1, f"the event loop stalled for {meter.longest * 1000:.0f} ms"


async def test_logs_each_state_change_once_not_each_retry(
    process: WorkloadApiProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    def retries() -> int:
        return sum("retrying in" in r.getMessage() for r in caplog.records)

    source = _fast(process.address)
    try:
        await source.start()
        await eventually(lambda: retries() >= 6, what="retries before the server starts")
        await process.start()
        await source.wait_ready(10)
        await process.stop()
        before = retries()
        await eventually(lambda: retries() >= before + 6, what="retries while the server is down")
        await process.start()
        await eventually(lambda: source.state == "connected", what="the reconnection")
    finally:
        await source.aclose()
        await process.stop()
    changes = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert [level for level, _ in changes] == ["WARNING", "INFO", "WARNING", "INFO"], changes
    assert "is not available yet" in changes[0][1]
    assert changes[1][1].startswith(f"connected to the Workload API at {process.address}")
    assert changes[2][1].startswith(f"lost the Workload API at {process.address}: UNAVAILABLE")
    assert changes[3][1].startswith(f"reconnected to the Workload API at {process.address}")


async def test_kept_svids_serve_while_api_is_down_until_they_expire(process: WorkloadApiProcess) -> None:
    clock = ManualClock(time.time())
    await process.start()
    async with _fast(process.address, clock=clock) as source:
        svid = source.x509_svid()
        jwt_svid = await source.fetch_jwt_svid("aud")
        await process.stop()
        await eventually(lambda: source.state == "disconnected", what="the disconnect")
        clock.now = jwt_svid.expiry - 1  # past half its lifetime: a refresh is due, and fails
        assert await source.fetch_jwt_svid("aud") is jwt_svid
        clock.now = jwt_svid.expiry
        with pytest.raises(SvidUnavailableError, match=f"no JWT-SVID for audience 'aud' .* {process.address}"):
            await source.fetch_jwt_svid("aud")
        clock.now = svid.not_after.timestamp() - 1
        assert source.x509_svid() is svid
        clock.now = svid.not_after.timestamp()
        with pytest.raises(SvidUnavailableError, match=r"expired at .* \(last error: UNAVAILABLE"):
            source.x509_svid()


async def test_aclose_of_connected_source_leaves_no_thread(server: WorkloadApiServer) -> None:
    before = set(threading.enumerate())
    source = _fast(server.address)
    await source.wait_ready(10)
    await source.fetch_jwt_svid("aud")
    started = time.monotonic()
    await source.aclose()
    assert time.monotonic() - started < 1.0
    assert source.state == "closed"
    await _assert_no_thread_left(before)
