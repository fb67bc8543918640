"""The Workload API over a real Unix socket, called with grpclib and py-spiffe's message classes."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from spiffe._proto import workload_pb2 as pb

from broker._files import write_private_file
from broker.devtools.devca import DevCA
from broker.devtools.workload_api import (
    FileEntryStore,
    InMemoryEntryStore,
    RegistrationEntry,
    WorkloadApiServer,
    WorkloadApiServerError,
)
from broker.devtools.workload_api.entries import dump_entries
from broker.identity.bundle import JwtBundle, X509Bundle
from broker.identity.jwtsvid import validate_jwt_svid

from ._support import TD, call_unary, me, open_stream, other_uid, serving

STREAMS = [
    pytest.param("FetchX509SVID", pb.X509SVIDRequest(), pb.X509SVIDResponse, id="FetchX509SVID"),
    pytest.param("FetchX509Bundles", pb.X509BundlesRequest(), pb.X509BundlesResponse, id="FetchX509Bundles"),
    pytest.param("FetchJWTBundles", pb.JWTBundlesRequest(), pb.JWTBundlesResponse, id="FetchJWTBundles"),
]
UNARY = [
    pytest.param("FetchJWTSVID", pb.JWTSVIDRequest(audience=["a"]), pb.JWTSVIDResponse, id="FetchJWTSVID"),
    pytest.param(
        "ValidateJWTSVID", pb.ValidateJWTSVIDRequest(audience="a", svid="x.y.z"), pb.ValidateJWTSVIDResponse,
        id="ValidateJWTSVID",
    ),
]  # fmt: skip


async def first_message(server: WorkloadApiServer, method: str, request: object, reply: type) -> Any:
    async with open_stream(server, method, request, reply) as stream:
        return await asyncio.wait_for(stream.recv_message(), 5)


@pytest.mark.parametrize(("method", "request_", "reply"), STREAMS + UNARY)
@pytest.mark.parametrize("metadata", [None, {"workload.spiffe.io": "false"}], ids=["absent", "false"])
async def test_request_without_security_header_is_invalid_argument(
    ca: DevCA, sock_dir: Path, method: str, request_: object, reply: type, metadata: object
) -> None:
    async with serving(ca, InMemoryEntryStore([me("/web")]), sock_dir) as server:
        with pytest.raises(GRPCError) as caught:
            if method in ("FetchJWTSVID", "ValidateJWTSVID"):
                await call_unary(server, method, request_, reply, metadata=metadata)
            else:
                async with open_stream(server, method, request_, reply, metadata=metadata) as stream:
                    await stream.recv_message()
    assert caught.value.status is Status.INVALID_ARGUMENT


@pytest.mark.parametrize(("method", "request_", "reply"), [*STREAMS, UNARY[0]])
async def test_caller_without_matching_entry_is_permission_denied(
    ca: DevCA, sock_dir: Path, method: str, request_: object, reply: type
) -> None:
    entries = InMemoryEntryStore([RegistrationEntry.of("spiffe://example.org/web", [f"unix:uid:{other_uid()}"])])
    async with serving(ca, entries, sock_dir) as server:
        with pytest.raises(GRPCError) as caught:
            if method in ("FetchJWTSVID", "ValidateJWTSVID"):
                await call_unary(server, method, request_, reply)
            else:
                await first_message(server, method, request_, reply)
    assert caught.value.status is Status.PERMISSION_DENIED


async def test_entry_needs_all_its_selectors_to_match(ca: DevCA, sock_dir: Path) -> None:
    entries = InMemoryEntryStore([me("/both", f"unix:gid:{os.getegid() + 1}"), me("/uid-only")])
    async with serving(ca, entries, sock_dir) as server:
        response = await first_message(server, "FetchX509SVID", pb.X509SVIDRequest(), pb.X509SVIDResponse)
    assert [svid.spiffe_id for svid in response.svids] == ["spiffe://example.org/uid-only"]


async def test_every_x509_message_carries_all_svids_and_bundle(ca: DevCA, sock_dir: Path) -> None:
    entries = InMemoryEntryStore([me("/first", hint="internal"), me("/second", f"unix:gid:{os.getegid()}")])
    async with (
        serving(ca, entries, sock_dir) as server,
        open_stream(server, "FetchX509SVID", pb.X509SVIDRequest(), pb.X509SVIDResponse) as stream,
    ):
        first = await asyncio.wait_for(stream.recv_message(), 5)
        server.rotate_now()
        second = await asyncio.wait_for(stream.recv_message(), 5)
    for response in (first, second):
        assert [s.spiffe_id for s in response.svids] == ["spiffe://example.org/first", "spiffe://example.org/second"]
        assert all(X509Bundle.from_der(TD, s.bundle).authorities == (ca.ca_cert,) for s in response.svids)
        assert dict(response.federated_bundles) == {}
    assert first.svids[0].hint == "internal"
    serials = [{x509.load_der_x509_certificate(s.x509_svid).serial_number for s in r.svids} for r in (first, second)]
    assert not serials[0] & serials[1]


async def test_duplicate_hints_are_dropped_after_the_first(ca: DevCA, sock_dir: Path) -> None:
    entries = InMemoryEntryStore([me("/a", hint="h"), me("/b", hint="h"), me("/c")])
    async with serving(ca, entries, sock_dir) as server:
        response = await first_message(server, "FetchX509SVID", pb.X509SVIDRequest(), pb.X509SVIDResponse)
    assert [s.spiffe_id for s in response.svids] == ["spiffe://example.org/a", "spiffe://example.org/c"]


async def test_bundles_are_keyed_by_trust_domain_id(ca: DevCA, sock_dir: Path) -> None:
    async with serving(ca, InMemoryEntryStore([me("/web")]), sock_dir) as server:
        x509_bundles = await first_message(server, "FetchX509Bundles", pb.X509BundlesRequest(), pb.X509BundlesResponse)
        jwt_bundles = await first_message(server, "FetchJWTBundles", pb.JWTBundlesRequest(), pb.JWTBundlesResponse)
    assert list(x509_bundles.bundles) == ["spiffe://example.org"]
    assert X509Bundle.from_der(TD, x509_bundles.bundles["spiffe://example.org"]).authorities == (ca.ca_cert,)
    assert list(jwt_bundles.bundles) == ["spiffe://example.org"]
    jwks = JwtBundle.from_jwks(TD, jwt_bundles.bundles["spiffe://example.org"])
    assert set(jwks.authorities) == {ca.jwt_kid}
    assert jwks.authorities[ca.jwt_kid].use == "jwt-svid"


async def test_fetch_jwt_svid_mints_one_per_entry_with_entry_ttl(ca: DevCA, sock_dir: Path) -> None:
    entries = InMemoryEntryStore([me("/a", jwt_svid_ttl=60), me("/b", jwt_svid_ttl=120)])
    async with serving(ca, entries, sock_dir) as server:
        response = await call_unary(server, "FetchJWTSVID", pb.JWTSVIDRequest(audience=["x", "y"]), pb.JWTSVIDResponse)
        only_b = await call_unary(
            server, "FetchJWTSVID", pb.JWTSVIDRequest(audience=["x"], spiffe_id="spiffe://example.org/b"),
            pb.JWTSVIDResponse,
        )  # fmt: skip
    assert [s.spiffe_id for s in response.svids] == ["spiffe://example.org/a", "spiffe://example.org/b"]
    assert [s.spiffe_id for s in only_b.svids] == ["spiffe://example.org/b"]
    for svid, ttl in zip(response.svids, (60, 120), strict=True):
        claims = validate_jwt_svid(svid.svid, audience="y", bundles={TD: ca.jwt_bundle()}).claims
        assert claims["aud"] == ["x", "y"]
        assert claims["exp"] - claims["iat"] == ttl


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        pytest.param(pb.JWTSVIDRequest(), Status.INVALID_ARGUMENT, id="no-audience"),
        pytest.param(pb.JWTSVIDRequest(audience=["a"], spiffe_id="spiffe://example.org/"), Status.INVALID_ARGUMENT,
                     id="malformed-spiffe-id"),
        pytest.param(pb.JWTSVIDRequest(audience=["a"], spiffe_id="spiffe://example.org/other"),
                     Status.PERMISSION_DENIED, id="not-entitled-spiffe-id"),
    ],
)  # fmt: skip
async def test_fetch_jwt_svid_rejects(ca: DevCA, sock_dir: Path, request_: object, status: Status) -> None:
    async with serving(ca, InMemoryEntryStore([me("/web")]), sock_dir) as server:
        with pytest.raises(GRPCError) as caught:
            await call_unary(server, "FetchJWTSVID", request_, pb.JWTSVIDResponse)
    assert caught.value.status is status


async def test_validate_jwt_svid_returns_id_and_claims(ca: DevCA, sock_dir: Path) -> None:
    token = ca.mint_jwt_svid(me("/web").spiffe_id, ["aud"], ttl=60, extra_claims={"x": {"y": [1]}}).token
    async with serving(ca, InMemoryEntryStore([me("/verifier")]), sock_dir) as server:
        response = await call_unary(
            server, "ValidateJWTSVID", pb.ValidateJWTSVIDRequest(audience="aud", svid=token), pb.ValidateJWTSVIDResponse
        )
    assert response.spiffe_id == "spiffe://example.org/web"
    assert response.claims["sub"] == "spiffe://example.org/web"
    assert list(response.claims["aud"]) == ["aud"]
    assert response.claims["x"]["y"][0] == 1


async def test_validate_jwt_svid_needs_no_entry_as_in_spire(ca: DevCA, sock_dir: Path) -> None:
    token = ca.mint_jwt_svid(me("/web").spiffe_id, ["aud"], ttl=60).token
    entries = InMemoryEntryStore([RegistrationEntry.of("spiffe://example.org/x", [f"unix:uid:{other_uid()}"])])
    async with serving(ca, entries, sock_dir) as server:
        response = await call_unary(
            server, "ValidateJWTSVID", pb.ValidateJWTSVIDRequest(audience="aud", svid=token), pb.ValidateJWTSVIDResponse
        )
    assert response.spiffe_id == "spiffe://example.org/web"


@pytest.mark.parametrize(
    ("audience", "token"),
    [
        pytest.param("", "VALID", id="no-audience"),
        pytest.param("aud", "", id="no-token"),
        pytest.param("other", "VALID", id="wrong-audience"),
        pytest.param("aud", "not-a-jwt", id="garbage"),
        pytest.param("aud", "FOREIGN", id="signed-by-another-ca"),
        pytest.param("aud", "EXPIRED", id="expired"),
    ],
)
async def test_validate_jwt_svid_of_bad_token_is_invalid_argument(
    ca: DevCA, sock_dir: Path, audience: str, token: str
) -> None:
    sid = me("/web").spiffe_id
    token = {
        "VALID": ca.mint_jwt_svid(sid, ["aud"], ttl=60).token,
        "FOREIGN": DevCA.ephemeral(TD).mint_jwt_svid(sid, ["aud"], ttl=60).token,
        "EXPIRED": ca.mint_jwt_svid(sid, ["aud"], ttl=60, extra_claims={"exp": int(time.time()) - 1}).token,
    }.get(token, token)
    async with serving(ca, InMemoryEntryStore([me("/verifier")]), sock_dir) as server:
        with pytest.raises(GRPCError) as caught:
            await call_unary(
                server, "ValidateJWTSVID", pb.ValidateJWTSVIDRequest(audience=audience, svid=token),
                pb.ValidateJWTSVIDResponse,
            )  # fmt: skip
    assert caught.value.status is Status.INVALID_ARGUMENT


async def test_entries_file_change_reaches_open_stream(ca: DevCA, sock_dir: Path) -> None:
    path = sock_dir / "entries.yaml"
    path.write_bytes(dump_entries([me("/one")]))
    async with (
        serving(ca, FileEntryStore(path), sock_dir, entries_poll_interval=0.05) as server,
        open_stream(server, "FetchX509SVID", pb.X509SVIDRequest(), pb.X509SVIDResponse) as stream,
    ):
        first = await asyncio.wait_for(stream.recv_message(), 5)
        write_private_file(path, dump_entries([me("/one"), me("/two")]))
        second = await asyncio.wait_for(stream.recv_message(), 5)
        write_private_file(path, dump_entries([]))
        assert await asyncio.wait_for(stream.recv_message(), 5) is None  # the server ended the stream
        with pytest.raises(GRPCError) as caught:
            await stream.recv_trailing_metadata()
    assert [s.spiffe_id for s in first.svids] == ["spiffe://example.org/one"]
    assert [s.spiffe_id for s in second.svids] == ["spiffe://example.org/one", "spiffe://example.org/two"]
    assert caught.value.status is Status.PERMISSION_DENIED


async def test_entries_outside_the_trust_domain_are_ignored(ca: DevCA, sock_dir: Path) -> None:
    foreign = RegistrationEntry.of("spiffe://other.org/web", [f"unix:uid:{os.geteuid()}"])
    async with serving(ca, InMemoryEntryStore([foreign, me("/web")]), sock_dir) as server:
        response = await first_message(server, "FetchX509SVID", pb.X509SVIDRequest(), pb.X509SVIDResponse)
    assert [s.spiffe_id for s in response.svids] == ["spiffe://example.org/web"]


async def test_svid_is_rotated_at_half_life_and_pushed(ca: DevCA, sock_dir: Path) -> None:
    async with (
        serving(ca, InMemoryEntryStore([me("/web", x509_svid_ttl=3)]), sock_dir) as server,
        open_stream(server, "FetchX509SVID", pb.X509SVIDRequest(), pb.X509SVIDResponse) as stream,
    ):
        first = await asyncio.wait_for(stream.recv_message(), 5)
        second = await asyncio.wait_for(stream.recv_message(), 5)
        arrived = time.time()
    old = x509.load_der_x509_certificate(first.svids[0].x509_svid)
    new = x509.load_der_x509_certificate(second.svids[0].x509_svid)
    assert new.serial_number != old.serial_number
    assert arrived < old.not_valid_after_utc.timestamp()


async def test_socket_is_world_connectable_and_removed_on_stop(ca: DevCA, sock_dir: Path) -> None:
    async with serving(ca, InMemoryEntryStore(), sock_dir) as server:
        mode = os.stat(server.socket_path).st_mode
        assert server.address == f"unix://{sock_dir}/agent.sock"
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o777
    assert not server.socket_path.exists()


async def test_stop_closes_open_connections(ca: DevCA, sock_dir: Path) -> None:
    server = WorkloadApiServer(ca=ca, entries=InMemoryEntryStore(), socket_path=sock_dir / "agent.sock")
    await server.start()
    reader, writer = await asyncio.open_unix_connection(str(server.socket_path))
    try:
        await asyncio.wait_for(reader.read(9), 5)  # the server's HTTP/2 SETTINGS frame header: connected
        await server.stop()
        remaining = await asyncio.wait_for(reader.read(), 5)  # returns at EOF only
    finally:
        writer.close()
        await writer.wait_closed()
    assert isinstance(remaining, bytes)


async def test_stale_socket_is_replaced(ca: DevCA, sock_dir: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_dir / "agent.sock"))
    stale.close()  # bound, never listening, now closed: a stale socket file
    async with serving(ca, InMemoryEntryStore([me("/web")]), sock_dir) as server:
        response = await first_message(server, "FetchX509SVID", pb.X509SVIDRequest(), pb.X509SVIDResponse)
    assert response.svids


@pytest.mark.parametrize("occupant", ["regular-file", "live-socket"])
async def test_start_refuses_path_in_use(ca: DevCA, sock_dir: Path, occupant: str) -> None:
    path = sock_dir / "agent.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if occupant == "regular-file":
            path.write_text("keep me")
        else:
            live.bind(str(path))
            live.listen()
        server = WorkloadApiServer(ca=ca, entries=InMemoryEntryStore(), socket_path=path)
        with pytest.raises(WorkloadApiServerError):
            await server.start()
    finally:
        live.close()
    assert path.exists()


def test_socket_path_too_long_is_refused(ca: DevCA) -> None:
    with pytest.raises(WorkloadApiServerError):
        WorkloadApiServer(ca=ca, entries=InMemoryEntryStore(), socket_path=Path("/tmp/" + "x" * 120))
