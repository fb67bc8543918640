"""Tests for TLS session resumption on server contexts (broker.identity.spiffetls.resumption and .context).

The clients are blocking ``ssl`` sockets in a thread: asyncio's TLS layer cannot offer a saved session, these can
(``session=``). A session is saved after reading the server's reply, by which time the TLS 1.3 ticket has come.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.devtools.devca import DevCA
from broker.identity.errors import X509SvidError
from broker.identity.memory import InMemorySvidSource
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.identity.spiffetls import context as context_module
from broker.identity.spiffetls.context import (
    PeerChainUnavailableError,
    SourceSSLContext,
    peer_spiffe_id,
    server_ssl_context,
)
from broker.identity.spiffetls.resumption import TICKET_KEY_LIFETIME, RememberedIntermediates
from broker.identity.svid import X509Svid
from broker.testing import ManualClock, upstream_source
from tests.unit.identity.spiffetls.test_tls import EchoServer

TD = TrustDomain("a.test")
SERVER_ID = SpiffeId.parse("spiffe://a.test/broker")
CLIENT_ID = SpiffeId.parse("spiffe://a.test/client")
OTHER_ID = SpiffeId.parse("spiffe://a.test/other")


@dataclass
class Connection:
    """What the client saw of one connection: was the session resumed, and the session to offer next time."""

    reused: bool
    session: ssl.SSLSession


@contextlib.asynccontextmanager
async def serving(source: InMemorySvidSource, clock: ManualClock | None = None) -> AsyncIterator[Served]:
    """A TLS server on loopback with a server context of ``source``, recording each connection's ssl object."""
    context = server_ssl_context(source, clock=clock or ManualClock())
    echo = EchoServer()
    echo.server = await asyncio.start_server(echo.handle, "127.0.0.1", 0, ssl=context)
    try:
        yield Served(echo.ssl_objects, context, echo.port)
    finally:
        context.detach()
        echo.server.close()
        await echo.server.wait_closed()


@dataclass
class Served:
    ssl_objects: list[ssl.SSLObject]
    context: SourceSSLContext
    port: int


def client_context(svid: X509Svid, ca: DevCA) -> ssl.SSLContext:
    """A plain ``ssl`` client presenting ``svid`` (``ssl`` offers a session only on the context that made it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=ca.x509_bundle().to_pem().decode())
    present(context, svid)
    return context


def present(context: ssl.SSLContext, svid: X509Svid) -> None:
    """Make ``context`` present ``svid`` from now on (a client that rotated its certificate)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as directory:
        cert, key = Path(directory) / "c.pem", Path(directory) / "k.pem"
        cert.write_bytes(svid.chain_pem())
        key.write_bytes(svid.key_pem())
        context.load_cert_chain(cert, key)


def _connect(port: int, context: ssl.SSLContext, session: ssl.SSLSession | None) -> Connection:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="broker", session=session) as tls,
    ):
        assert tls.recv(16) == b"ok"
        tls.recv(16)  # the close: the ticket that came before it has been read
        assert tls.session is not None
        return Connection(reused=bool(tls.session_reused), session=tls.session)


async def connect(port: int, context: ssl.SSLContext, session: ssl.SSLSession | None = None) -> Connection:
    return await asyncio.to_thread(_connect, port, context, session)


@pytest.fixture
def ca() -> DevCA:
    return DevCA.ephemeral(TD)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_000.0)


@pytest.fixture
def remembered(monkeypatch: pytest.MonkeyPatch) -> Iterator[RememberedIntermediates]:
    """A fresh memory of intermediates for the test (the process's own is shared by every test)."""
    fresh = RememberedIntermediates()
    monkeypatch.setattr(context_module, "REMEMBERED_INTERMEDIATES", fresh)
    yield fresh


@pytest.fixture
async def served(ca: DevCA, clock: ManualClock) -> AsyncIterator[Served]:
    async with serving(InMemorySvidSource(ca, SERVER_ID), clock) as found:
        yield found


@pytest.fixture
async def through_intermediates(ca: DevCA) -> AsyncIterator[tuple[Served, ssl.SSLContext, X509Svid]]:
    """A server and a client whose SVIDs are signed by an intermediate (SPIRE with an UpstreamAuthority)."""
    client_svid = upstream_source(ca, CLIENT_ID, depth=1).x509_svid()
    async with serving(upstream_source(ca, SERVER_ID, depth=1)) as found:
        yield found, client_context(client_svid, ca), client_svid


async def test_a_resumed_session_is_the_client_of_the_session_not_of_the_certificate_loaded_now(
    served: Served, ca: DevCA
) -> None:
    """RFC 8705 §3 binds to the certificate of the mutual-TLS session; resuming carries that session's certificate."""
    server, context, port = served.ssl_objects, served.context, served.port
    first_svid, other_svid = ca.issue_x509_svid(CLIENT_ID, ttl=600), ca.issue_x509_svid(OTHER_ID, ttl=600)
    client = client_context(first_svid, ca)
    first = await connect(port, client)
    present(client, other_svid)
    resumed = await connect(port, client, first.session)
    assert not first.reused and resumed.reused
    assert server[1].session_reused
    spiffe_id, leaf = peer_spiffe_id(server[1], context.bundles())
    assert spiffe_id == CLIENT_ID and leaf == first_svid.leaf


async def test_without_a_session_the_certificate_sent_is_the_client(served: Served, ca: DevCA) -> None:
    server, context, port = served.ssl_objects, served.context, served.port
    await connect(port, client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca))
    fresh = await connect(port, client_context(ca.issue_x509_svid(OTHER_ID, ttl=600), ca))
    assert not fresh.reused
    assert peer_spiffe_id(server[1], context.bundles())[0] == OTHER_ID


async def test_tickets_stop_resuming_once_the_ticket_key_lifetime_is_over(
    served: Served, ca: DevCA, clock: ManualClock
) -> None:
    server, context, port = served.ssl_objects, served.context, served.port
    client = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    first = await connect(port, client)
    clock.advance(TICKET_KEY_LIFETIME - 1)
    within = await connect(port, client, first.session)
    clock.advance(2)
    present(client, ca.issue_x509_svid(OTHER_ID, ttl=600))
    after = await connect(port, client, within.session)
    assert within.reused and not after.reused
    assert context.current() is not context
    assert peer_spiffe_id(server[2], context.bundles())[0] == OTHER_ID


async def test_a_rotated_server_svid_ends_resumption_of_earlier_sessions(ca: DevCA) -> None:
    source = InMemorySvidSource(ca, SERVER_ID)
    async with serving(source) as served:
        client = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
        first = await connect(served.port, client)
        source.rotate()
        assert not (await connect(served.port, client, first.session)).reused


async def test_a_ticket_from_another_server_is_not_resumed(ca: DevCA) -> None:
    """Each context (each replica, each process) has its own random ticket key."""
    async with serving(InMemorySvidSource(ca, SERVER_ID)) as one, serving(InMemorySvidSource(ca, SERVER_ID)) as two:
        client = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
        first = await connect(one.port, client)
        assert not (await connect(two.port, client, first.session)).reused


async def test_a_resumed_session_through_intermediates_is_verified_with_the_remembered_chain(
    through_intermediates: tuple[Served, ssl.SSLContext, X509Svid], remembered: RememberedIntermediates
) -> None:
    served, client, client_svid = through_intermediates
    first = await connect(served.port, client)
    peer_spiffe_id(served.ssl_objects[0], served.context.bundles())  # a full handshake: its chain is remembered
    assert len(remembered) == 1
    assert (await connect(served.port, client, first.session)).reused
    assert peer_spiffe_id(served.ssl_objects[1], served.context.bundles()) == (CLIENT_ID, client_svid.leaf)


async def test_a_resumed_session_whose_intermediates_were_forgotten_fails_closed(
    through_intermediates: tuple[Served, ssl.SSLContext, X509Svid],
    remembered: RememberedIntermediates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served, client, _ = through_intermediates
    first = await connect(served.port, client)
    peer_spiffe_id(served.ssl_objects[0], served.context.bundles())
    monkeypatch.setattr(context_module, "REMEMBERED_INTERMEDIATES", RememberedIntermediates())
    assert (await connect(served.port, client, first.session)).reused
    with pytest.raises(X509SvidError):  # the leaf alone does not chain to the bundle
        peer_spiffe_id(served.ssl_objects[1], served.context.bundles())


async def test_a_resumed_session_is_checked_against_the_bundle_of_now(ca: DevCA, served: Served) -> None:
    """A client certificate that no longer chains to its trust domain's current bundle fails on resumption too."""
    server, port = served.ssl_objects, served.port
    other_ca = DevCA.ephemeral(TD)
    client = client_context(ca.issue_x509_svid(CLIENT_ID, ttl=600), ca)
    first = await connect(port, client)
    assert (await connect(port, client, first.session)).reused
    with pytest.raises(X509SvidError):
        peer_spiffe_id(server[1], {TD: other_ca.x509_bundle()})


def test_remembered_intermediates_keep_only_chains_with_intermediates_and_forget_the_oldest() -> None:
    remembered = RememberedIntermediates(max_leaves=2)
    remembered.remember([b"leaf-alone"])
    assert len(remembered) == 0
    for name in (b"a", b"b", b"c"):
        remembered.remember([name, b"int-" + name])
    assert remembered.chain_for(b"a") == [b"a"]
    assert remembered.chain_for(b"c") == [b"c", b"int-c"]


def test_no_chain_and_no_resumption_still_fails_closed() -> None:
    class NoChainNotResumed:
        session_reused = False
        server_side = True

        class _sslobj:
            @staticmethod
            def get_unverified_chain() -> None:
                return None

        @staticmethod
        def getpeercert(binary_form: bool = False) -> bytes:
            return b"leaf"

    with pytest.raises(PeerChainUnavailableError):
        context_module.peer_certificate_chain(NoChainNotResumed())  # type: ignore[arg-type]
