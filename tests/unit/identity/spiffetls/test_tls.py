"""Tests for broker.identity.spiffetls.context: SVID-fed ssl contexts and the per-trust-domain peer check."""

from __future__ import annotations

import _ssl
import asyncio
import os
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.devtools.devca import DevCA
from broker.identity.errors import X509SvidError
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.identity.spiffetls.context import (
    PeerChainUnavailableError,
    SourceSSLContext,
    _private_file,
    check_server_id,
    client_ssl_context,
    peer_certificate,
    peer_certificate_chain,
    peer_spiffe_id,
    server_ssl_context,
)
from broker.identity.svid import X509Svid
from broker.identity.x509svid import ChainVerificationError
from broker.testing import forged_svid, svid_through_intermediates, upstream_source

TD_A = TrustDomain("a.test")
TD_B = TrustDomain("b.test")
SERVER_ID = SpiffeId.parse("spiffe://a.test/broker")
CLIENT_ID = SpiffeId.parse("spiffe://a.test/client")


@pytest.fixture
def ca_a() -> DevCA:
    return DevCA.ephemeral(TD_A)


@pytest.fixture
def ca_b() -> DevCA:
    return DevCA.ephemeral(TD_B)


class EchoServer:
    """A TLS server on loopback that records each connection's ssl object."""

    def __init__(self) -> None:
        self.ssl_objects: list[ssl.SSLObject] = []
        self.server: asyncio.base_events.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.ssl_objects.append(writer.get_extra_info("ssl_object"))
        writer.write(b"ok")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def tls_server(ca_a: DevCA, ca_b: DevCA) -> AsyncIterator[tuple[EchoServer, InMemorySvidSource]]:
    source = InMemorySvidSource(ca_a, SERVER_ID, federated={TD_B: ca_b})
    ctx = server_ssl_context(source)
    echo = EchoServer()
    echo.server = await asyncio.start_server(echo.handle, "127.0.0.1", 0, ssl=ctx)
    yield echo, source
    ctx.detach()
    echo.server.close()
    await echo.server.wait_closed()


async def connect(port: int, ctx: ssl.SSLContext, *, server_hostname: str | None = None) -> tuple[ssl.SSLObject, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=server_hostname)
    ssl_object = writer.get_extra_info("ssl_object")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return ssl_object, data


def client_source(ca: DevCA, spiffe_id: SpiffeId) -> InMemorySvidSource:
    return InMemorySvidSource(ca, spiffe_id)


async def test_mtls_handshake_shows_each_side_the_others_svid(
    tls_server: tuple[EchoServer, InMemorySvidSource], ca_a: DevCA
) -> None:
    echo, server_source = tls_server
    source = client_source(ca_a, CLIENT_ID)
    ctx = client_ssl_context(source, server_id=SERVER_ID)
    ssl_object, data = await connect(echo.port, ctx)
    assert data == b"ok"
    assert ctx.check_peer(ssl_object) == SERVER_ID
    assert peer_certificate(ssl_object) == server_source.x509_svid().leaf
    spiffe_id, leaf = peer_spiffe_id(echo.ssl_objects[0], server_source.x509_bundles())
    assert spiffe_id == CLIENT_ID
    assert leaf == source.x509_svid().leaf
    assert ssl_object.version() == "TLSv1.3"
    ctx.detach()


async def refused(port: int, ctx: ssl.SSLContext) -> bool:
    """True if the server refuses the client: a TLS alert, a reset, or (TLS 1.3) a close before any data."""
    try:
        _, data = await connect(port, ctx)
    except (ssl.SSLError, ConnectionError):
        return True
    return data == b""


def plain_client_context(svid: X509Svid, *roots: DevCA) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    for root in roots:
        ctx.load_verify_locations(cadata=root.x509_bundle().to_pem().decode())
    with tempfile.TemporaryDirectory(dir="/tmp") as directory:
        cert, key = Path(directory) / "c.pem", Path(directory) / "k.pem"
        cert.write_bytes(svid.chain_pem())
        key.write_bytes(svid.key_pem())
        ctx.load_cert_chain(cert, key)
    return ctx


async def test_server_refuses_client_without_certificate(
    tls_server: tuple[EchoServer, InMemorySvidSource], ca_a: DevCA
) -> None:
    echo, _ = tls_server
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=ca_a.x509_bundle().to_pem().decode())
    assert await refused(echo.port, ctx)
    assert echo.ssl_objects == []


async def test_server_refuses_client_from_untrusted_ca(
    tls_server: tuple[EchoServer, InMemorySvidSource], ca_a: DevCA
) -> None:
    stranger = DevCA.ephemeral("c.test")
    ctx = plain_client_context(stranger.issue_x509_svid(SpiffeId.parse("spiffe://c.test/x"), ttl=600), ca_a)
    echo, _ = tls_server
    assert await refused(echo.port, ctx)
    assert echo.ssl_objects == []


async def test_peer_check_accepts_leaf_signed_by_its_own_domain(
    tls_server: tuple[EchoServer, InMemorySvidSource], ca_a: DevCA
) -> None:
    echo, server_source = tls_server
    _, data = await connect(echo.port, plain_client_context(forged_svid(ca_a, str(CLIENT_ID)), ca_a))
    assert data == b"ok"
    assert peer_spiffe_id(echo.ssl_objects[-1], server_source.x509_bundles())[0] == CLIENT_ID


async def test_peer_check_refuses_id_of_a_chained_to_b_ca(
    tls_server: tuple[EchoServer, InMemorySvidSource], ca_a: DevCA, ca_b: DevCA
) -> None:
    """X509-SVID §5: a certificate claiming spiffe://a.test/... that chains to b's CA passes ssl, not the check."""
    echo, server_source = tls_server
    _, data = await connect(echo.port, plain_client_context(forged_svid(ca_b, str(CLIENT_ID)), ca_a))
    assert data == b"ok"  # the ssl layer accepts it: every loaded root is trusted
    with pytest.raises(ChainVerificationError):
        peer_spiffe_id(echo.ssl_objects[-1], server_source.x509_bundles())


@pytest.mark.parametrize("server_hostname", [None, "broker.test"], ids=["no-sni", "sni"])
async def test_server_presents_rotated_svid_to_new_connections(
    tls_server: tuple[EchoServer, InMemorySvidSource], ca_a: DevCA, server_hostname: str | None
) -> None:
    echo, server_source = tls_server
    ctx = client_ssl_context(client_source(ca_a, CLIENT_ID), server_id=SERVER_ID)
    first, _ = await connect(echo.port, ctx, server_hostname=server_hostname)
    assert peer_certificate(first) == server_source.x509_svid().leaf
    rotated = server_source.rotate()
    second, _ = await connect(echo.port, ctx, server_hostname=server_hostname)
    assert peer_certificate(second) == rotated.leaf
    assert peer_certificate(first) != rotated.leaf
    ctx.detach()


async def test_server_trusts_bundle_added_after_start(
    tls_server: tuple[EchoServer, InMemorySvidSource], ca_a: DevCA
) -> None:
    echo, server_source = tls_server
    newcomer = DevCA.ephemeral("c.test")
    ctx = client_ssl_context(
        InMemorySvidSource(newcomer, SpiffeId.parse("spiffe://c.test/x"), federated={TD_A: ca_a}), server_id=None
    )
    assert await refused(echo.port, ctx)
    server_source._federated[TrustDomain("c.test")] = newcomer
    server_source.rotate()  # notifies subscribers, as a bundle update from the Workload API would
    _, data = await connect(echo.port, ctx)
    assert data == b"ok"
    ctx.detach()


def test_detach_unsubscribes_from_source(ca_a: DevCA) -> None:
    source = InMemorySvidSource(ca_a, SERVER_ID)
    ctx = server_ssl_context(source)
    assert isinstance(ctx, SourceSSLContext)
    assert len(source._subscribers) == 1
    ctx.detach()
    ctx.detach()
    assert source._subscribers == []


def test_server_context_keeps_last_good_when_source_has_no_svid(ca_a: DevCA) -> None:
    source = InMemorySvidSource(ca_a, SERVER_ID)
    ctx = server_ssl_context(source)
    before = ctx.current()
    source.set_unavailable()
    for callback in list(source._subscribers):
        callback()
    assert ctx.current() is before
    ctx.detach()


def test_server_context_floor_is_tls12_and_requires_client_cert(ca_a: DevCA) -> None:
    source = InMemorySvidSource(ca_a, SERVER_ID)
    required = server_ssl_context(source)
    optional = server_ssl_context(source, require_client_cert=False)
    assert required.minimum_version == ssl.TLSVersion.TLSv1_2
    assert required.verify_mode == ssl.CERT_REQUIRED
    assert optional.verify_mode == ssl.CERT_OPTIONAL
    assert required.get_ca_certs()[0]["subject"]  # only the bundle's roots are loaded
    assert len(required.get_ca_certs()) == 1
    required.detach()
    optional.detach()


def test_private_file_uses_memfd_that_is_not_on_disk() -> None:
    with _private_file(b"secret", "k") as path:
        assert path.startswith("/proc/self/fd/")
        assert Path(path).read_bytes() == b"secret"
        assert "memfd:" in os.readlink(path)


def test_private_file_fallback_is_0600_in_0700_dir_and_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "memfd_create")
    with _private_file(b"secret", "k") as path:
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
        assert Path(path).read_bytes() == b"secret"
    assert not os.path.exists(path)
    assert not os.path.exists(os.path.dirname(path))


def test_peer_certificate_is_none_without_tls() -> None:
    assert peer_certificate(None) is None


def test_peer_spiffe_id_without_tls_raises(ca_a: DevCA) -> None:
    with pytest.raises(X509SvidError):
        peer_spiffe_id(None, {TD_A: ca_a.x509_bundle()})


async def test_client_check_refuses_unexpected_server_id(
    tls_server: tuple[EchoServer, InMemorySvidSource], ca_a: DevCA
) -> None:
    echo, _ = tls_server
    source = client_source(ca_a, CLIENT_ID)
    ctx = client_ssl_context(source, server_id=SpiffeId.parse("spiffe://a.test/other"))
    ssl_object, _ = await connect(echo.port, ctx)
    with pytest.raises(X509SvidError):
        ctx.check_peer(ssl_object)
    assert check_server_id(ssl_object, source.x509_bundles(), lambda sid: sid.path == "/broker") == SERVER_ID
    with pytest.raises(X509SvidError):
        check_server_id(ssl_object, source.x509_bundles(), lambda sid: False)
    ctx.detach()


async def test_client_with_exact_server_id_refuses_other_domain_server_in_handshake(ca_a: DevCA, ca_b: DevCA) -> None:
    """A server of a federated trust domain never completes the handshake with a client expecting an a.test ID."""
    b_source = InMemorySvidSource(ca_b, SpiffeId.parse("spiffe://b.test/broker"), federated={TD_A: ca_a})
    server_ctx = server_ssl_context(b_source)
    echo = EchoServer()
    echo.server = await asyncio.start_server(echo.handle, "127.0.0.1", 0, ssl=server_ctx)
    client_src = InMemorySvidSource(ca_a, CLIENT_ID, federated={TD_B: ca_b})
    strict = client_ssl_context(client_src, server_id=SERVER_ID)
    loose = client_ssl_context(client_src, server_id=None)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(echo.port, strict)
        ssl_object, _ = await connect(echo.port, loose)
        assert loose.check_peer(ssl_object) == SpiffeId.parse("spiffe://b.test/broker")
    finally:
        strict.detach()
        loose.detach()
        server_ctx.detach()
        echo.server.close()
        await echo.server.wait_closed()


# --- chains through intermediates (SPIRE with an UpstreamAuthority, nested SPIRE) ------------------------------


@pytest.mark.parametrize("depth", [1, 2], ids=["upstream-authority", "nested-spire"])
async def test_mtls_through_intermediates_verifies_both_peers_per_trust_domain(
    ca_a: DevCA, ca_b: DevCA, depth: int
) -> None:
    """Each side sends its intermediates (the whole chain is loaded) and the other verifies them to its bundle."""
    server_source = upstream_source(ca_a, SERVER_ID, federated={TD_B: ca_b}, depth=depth)
    client = upstream_source(ca_a, CLIENT_ID, federated={TD_B: ca_b}, depth=depth)
    server_ctx = server_ssl_context(server_source)
    client_ctx = client_ssl_context(client, server_id=SERVER_ID)
    echo = EchoServer()
    echo.server = await asyncio.start_server(echo.handle, "127.0.0.1", 0, ssl=server_ctx)
    try:
        ssl_object, data = await connect(echo.port, client_ctx)
        assert data == b"ok"
        assert client_ctx.check_peer(ssl_object) == SERVER_ID
        assert peer_certificate_chain(ssl_object) == list(server_source.x509_svid().chain)
        assert server_ctx.check_peer(echo.ssl_objects[0]) == CLIENT_ID
        assert peer_certificate_chain(echo.ssl_objects[0]) == list(client.x509_svid().chain)
    finally:
        client_ctx.detach()
        server_ctx.detach()
        echo.server.close()
        await echo.server.wait_closed()


async def test_peer_check_refuses_id_of_a_through_b_intermediate(
    tls_server: tuple[EchoServer, InMemorySvidSource], ca_a: DevCA, ca_b: DevCA
) -> None:
    """A leaf claiming spiffe://a.test/... under an intermediate of b.test passes ssl (b is loaded), not the check."""
    echo, server_source = tls_server
    intermediate = svid_through_intermediates(ca_b, SpiffeId.parse("spiffe://b.test/x")).chain[1]
    forged = forged_svid(ca_b, str(CLIENT_ID))
    svid = X509Svid(CLIENT_ID, (forged.leaf, intermediate), forged.private_key)
    _, data = await connect(echo.port, plain_client_context(svid, ca_a))
    assert data == b"ok"
    with pytest.raises(ChainVerificationError):
        peer_spiffe_id(echo.ssl_objects[-1], server_source.x509_bundles())


def test_peer_chain_route_exists_on_this_python() -> None:
    """The route :func:`peer_certificate_chain` takes: public on 3.13+, the C-level accessor before."""
    if sys.version_info >= (3, 13):
        assert callable(ssl.SSLObject.get_unverified_chain)
        assert callable(ssl.SSLSocket.get_unverified_chain)
    else:
        assert not hasattr(ssl.SSLObject, "get_unverified_chain")
        assert callable(_ssl._SSLSocket.get_unverified_chain)  # type: ignore[attr-defined]


class _LeafOnly:
    """An ssl object as a Python without any chain accessor would give it: the leaf only."""

    def __init__(self, real: ssl.SSLObject) -> None:
        self._real = real

    def getpeercert(self, binary_form: bool = False) -> object:
        return self._real.getpeercert(binary_form)


class _NoChain(_LeafOnly):
    """The C accessor answers None, as for a session resumed from a ticket (the chain was not kept)."""

    class _Inner:
        @staticmethod
        def get_unverified_chain() -> None:
            return None

    _sslobj = _Inner()


@pytest.mark.parametrize("wrapper", [_LeafOnly, _NoChain], ids=["no-accessor", "no-chain"])
async def test_peer_check_fails_closed_without_the_peer_chain(
    tls_server: tuple[EchoServer, InMemorySvidSource], ca_a: DevCA, wrapper: type[_LeafOnly]
) -> None:
    echo, server_source = tls_server
    _, data = await connect(echo.port, client_ssl_context(client_source(ca_a, CLIENT_ID), server_id=SERVER_ID))
    assert data == b"ok"
    leaf_only = wrapper(echo.ssl_objects[-1])
    assert peer_certificate(leaf_only) is not None  # type: ignore[arg-type]
    with pytest.raises(PeerChainUnavailableError):
        peer_spiffe_id(leaf_only, server_source.x509_bundles())  # type: ignore[arg-type]


def test_server_contexts_issue_one_session_ticket_per_handshake_also_after_rotation(ca_a: DevCA) -> None:
    """Resumption is on (broker.identity.spiffetls.resumption); the replacement context keeps the same settings."""
    source = InMemorySvidSource(ca_a, SERVER_ID)
    ctx = server_ssl_context(source)
    source.rotate()
    for context in (ctx, ctx.current()):
        assert context.num_tickets == 1
        assert not context.options & ssl.OP_NO_TICKET
        assert context.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.current() is not ctx
    ctx.detach()
