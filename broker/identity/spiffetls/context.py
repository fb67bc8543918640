"""mTLS with X.509-SVIDs: ``ssl`` contexts fed by an :class:`X509ContextSource`, and the per-trust-domain peer check.

What the ``ssl`` module can and cannot do:

* It verifies a peer chain against *every* loaded root. With federated bundles loaded, a certificate naming
  ``spiffe://a/...`` that chains to b's CA passes the handshake. The SPIFFE X509-SVID rule (§5.1: validate
  against the bundle of the trust domain the SPIFFE ID names) is therefore applied after the handshake by
  :func:`peer_spiffe_id`. Every server and client using these contexts MUST call it (or
  :meth:`SourceSSLContext.check_peer`) before trusting the peer.
* ``getpeercert()`` shows only the leaf. The peer's chain (leaf first, then the intermediates it sent; SPIRE with
  an UpstreamAuthority, or nested SPIRE, signs leaves with an intermediate) comes from
  :func:`peer_certificate_chain`: ``SSLObject.get_unverified_chain()`` on Python 3.13+, the same accessor of the
  C-level ``_ssl._SSLSocket`` (``ssl_object._sslobj``, present since 3.10) before. If neither is there, or the
  chain is missing, the check fails closed (:class:`PeerChainUnavailableError`); a test watches the route.
  The whole chain is then verified again with ``verify_x509_svid`` against the leaf's own trust domain only.
* Server contexts issue TLS session tickets (one per handshake) and rotate their keys: see
  :mod:`broker.identity.spiffetls.resumption` for why a resumed session still authenticates the client and binds
  its tokens to the session's certificate. A resumed session carries the peer's leaf but not its chain; the
  intermediates the leaf was last sent with are remembered, and the whole chain is verified again.
* Key material must come from files: :func:`_load_svid` hands it over (the full chain, so peers receive the
  intermediates) through anonymous ``memfd`` files (never on disk), falling back to 0600 files in a private
  0700 directory that are unlinked right after loading.

Freshness: a context subscribes to its source. On every change, and every
:data:`~broker.identity.spiffetls.resumption.TICKET_KEY_LIFETIME` seconds (a new ticket key), the server context
builds a complete replacement context; each new connection is wrapped by the newest one
(:meth:`SourceSSLContext.wrap_bio`), so rotated SVIDs and changed bundles apply to new connections without a
restart. The client context re-loads its certificate in place.
"""

from __future__ import annotations

import _ssl
import contextlib
import datetime as dt
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from broker.identity.bundle import X509BundleSet
from broker.identity.errors import X509SvidError
from broker.identity.source import X509ContextSource
from broker.identity.spiffeid import SpiffeId
from broker.identity.spiffetls.resumption import (
    REMEMBERED_INTERMEDIATES,
    TICKET_KEY_LIFETIME,
    TICKETS_PER_HANDSHAKE,
)
from broker.identity.spiffetls.verified import VERIFIED_CHAINS, chain_key
from broker.identity.svid import X509Svid
from broker.identity.x509svid import Role, verify_x509_svid

__all__ = [
    "NoPeerCertificateError",
    "PeerChainUnavailableError",
    "ServerIdMatcher",
    "SourceSSLContext",
    "check_server_id",
    "client_ssl_context",
    "peer_certificate",
    "peer_certificate_chain",
    "peer_spiffe_id",
    "server_ssl_context",
]

log = logging.getLogger(__name__)


class NoPeerCertificateError(X509SvidError):
    """The peer presented no certificate at all."""

    reason = "no_peer_certificate"


class PeerChainUnavailableError(X509SvidError):
    """The ``ssl`` module did not expose the chain the peer sent, so it cannot be verified per trust domain."""

    reason = "peer_chain_unavailable"


ServerIdMatcher = SpiffeId | Callable[[SpiffeId], bool] | None


class SourceSSLContext(ssl.SSLContext):
    """An ``ssl.SSLContext`` kept current by an :class:`X509ContextSource`; :meth:`detach` stops the updates.

    ``bundles()`` returns the source's current X.509 bundles (for :func:`peer_spiffe_id`); ``server_id`` is
    the matcher a client context was built with.
    """

    _source: X509ContextSource
    _unsubscribe: Callable[[], None] | None
    _current: ssl.SSLContext
    _renew_after: float
    _renew: Callable[[], None] | None
    _clock: Callable[[], float]
    server_id: ServerIdMatcher

    def bundles(self) -> X509BundleSet:
        return self._source.x509_bundles()

    def current(self) -> ssl.SSLContext:
        """The newest context built from the source (``self`` until the first change)."""
        return self._current

    def check_peer(self, ssl_object: ssl.SSLObject | ssl.SSLSocket) -> SpiffeId:
        """Per-trust-domain check of the peer, then (client contexts) the expected server ID."""
        return check_server_id(ssl_object, self.bundles(), self.server_id)

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        """Wrap with the newest context (asyncio's and uvloop's TLS layers call this for every connection); a
        server context first replaces itself when its ticket key's lifetime is over."""
        if server_side and self._renew is not None and self._clock() >= self._renew_after:
            self._renew()
        current = self._current
        if current is self:
            return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        return current.wrap_bio(incoming, outgoing, server_side, server_hostname, session)

    def detach(self) -> None:
        """Unsubscribe from the source (idempotent)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None


def server_ssl_context(
    source: X509ContextSource,
    *,
    require_client_cert: bool = True,
    ticket_key_lifetime: float = TICKET_KEY_LIFETIME,
    clock: Callable[[], float] = time.monotonic,
) -> SourceSSLContext:
    """A TLS server context presenting the source's X.509-SVID and verifying client certificates.

    TLS 1.2 is the floor (TLS 1.3 is negotiated when the client offers it). Client chains are verified against
    the roots of *all* the source's trust bundles; the per-trust-domain check is :func:`peer_spiffe_id`.
    With ``require_client_cert=False`` a client certificate is optional but still verified when sent. Session
    tickets are issued; the context is rebuilt with a new ticket key every ``ticket_key_lifetime`` seconds.
    """
    verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    outer = _new_server_context(source, verify_mode, cls=SourceSSLContext)
    assert isinstance(outer, SourceSSLContext)
    _bind(outer, source, server_id=None)
    outer._clock = clock

    def pick_newest(sock: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
        newest = outer._current
        if newest is not outer:
            sock.context = newest

    def replace(reason: str) -> None:
        outer._renew_after = clock() + ticket_key_lifetime  # also after a failure: no rebuild per connection
        try:
            replacement = _new_server_context(source, verify_mode, cls=ssl.SSLContext)
            if reason == "change":
                _load_svid(outer, source.x509_svid())  # also refresh the fallback context itself
        except Exception as exc:  # keep serving with the last good context
            log.warning("TLS server context not refreshed; keeping the previous one: %s", type(exc).__name__)
            return
        outer._current = replacement
        if reason == "change":
            log.info("TLS server context refreshed for %s", source.x509_svid().spiffe_id)

    outer.sni_callback = pick_newest
    outer._renew_after = clock() + ticket_key_lifetime
    outer._renew = lambda: replace("ticket key")
    outer._unsubscribe = source.subscribe(lambda: replace("change"))
    return outer


def client_ssl_context(source: X509ContextSource, *, server_id: ServerIdMatcher) -> SourceSSLContext:
    """A TLS client context presenting the source's X.509-SVID and verifying the server against the bundles.

    ``check_hostname`` is off: SPIFFE authenticates by the URI SAN, not by DNS name. The handshake alone does not
    check the server's SPIFFE ID; after connecting call ``ctx.check_peer(ssl_object)`` (or
    :func:`check_server_id`) before sending anything. With aiohttp use
    :class:`broker.identity.spiffetls.connector.SpiffeTLSConnector`, which does that on every new connection (a
    response's ``connection`` is already released once a small body is read). ``server_id=None`` accepts any ID from a
    trusted domain.

    With an exact ``server_id`` only the roots of that ID's trust domain are loaded, so the handshake itself
    already refuses servers of every other (federated) trust domain before any request byte is sent.
    """
    ctx = SourceSSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_roots(ctx, _client_roots(source, server_id))
    _load_svid(ctx, source.x509_svid())
    _bind(ctx, source, server_id=server_id)

    def on_change() -> None:
        try:
            _load_roots(ctx, _client_roots(source, server_id))  # adds new roots; removed ones fail check_peer
            _load_svid(ctx, source.x509_svid())
        except Exception as exc:
            log.warning("TLS client context not refreshed; keeping the previous one: %s", type(exc).__name__)

    ctx._unsubscribe = source.subscribe(on_change)
    return ctx


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> x509.Certificate | None:
    """The peer's leaf certificate, or None if there is no TLS or the peer sent no certificate."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    return x509.load_der_x509_certificate(der)


def peer_spiffe_id(
    ssl_object: ssl.SSLObject | ssl.SSLSocket | None, bundles: X509BundleSet, *, role: Role = "client"
) -> tuple[SpiffeId, x509.Certificate]:
    """The peer's SPIFFE ID, its chain verified against the bundle of the trust domain that ID names (X509-SVID §5).

    The chain is the one the peer sent (:func:`peer_certificate_chain`): the leaf and any intermediates, each
    checked by ``verify_x509_svid`` (signatures, validity, CA constraints, path length, key usage) up to an
    authority of the leaf's own trust domain, as a peer in ``role`` (its extended key usage). A chain verified
    before, against the same bundle and still inside every validity period, is not verified again
    (:mod:`~broker.identity.spiffetls.verified`). Raises :class:`X509SvidError` if there is no certificate, the
    chain is not available, or it fails a check.
    """
    leaf_der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not leaf_der or ssl_object is None:
        raise NoPeerCertificateError("no peer certificate")
    ders = _peer_chain_der(ssl_object)
    if ders[0] != leaf_der:
        raise PeerChainUnavailableError("the peer chain does not start with the peer certificate")
    key = chain_key(ders, role)
    known = VERIFIED_CHAINS.lookup(key, bundles, dt.datetime.now(dt.UTC))
    if known is not None:
        return known.spiffe_id, known.leaf
    chain = _parsed(ders)
    spiffe_id = verify_x509_svid(chain, bundles, role=role)
    bundle = bundles.get(spiffe_id.trust_domain)
    if bundle is not None:
        VERIFIED_CHAINS.keep(key, spiffe_id, chain, bundle)
    return spiffe_id, chain[0]


def check_server_id(
    ssl_object: ssl.SSLObject | ssl.SSLSocket | None, bundles: X509BundleSet, expected: ServerIdMatcher
) -> SpiffeId:
    """Validate the peer, a server (``serverAuth``), per trust domain, then match its SPIFFE ID; raise
    :class:`X509SvidError` otherwise."""
    spiffe_id, _leaf = peer_spiffe_id(ssl_object, bundles, role="server")
    if expected is None:
        return spiffe_id
    ok = spiffe_id == expected if isinstance(expected, SpiffeId) else bool(expected(spiffe_id))
    if not ok:
        raise X509SvidError(f"unexpected peer SPIFFE ID {spiffe_id}")
    return spiffe_id


def peer_certificate_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[x509.Certificate]:
    """The chain the peer sent in the handshake, leaf first, not yet verified per trust domain.

    Python 3.13+: the public ``get_unverified_chain()`` (DER bytes). Python 3.11-3.12: the same accessor of the
    C-level object behind the ``ssl`` wrapper (``_sslobj.get_unverified_chain()``, ``_ssl.Certificate`` items);
    for a server-side connection CPython puts the client's leaf first, as OpenSSL leaves it out. A resumed
    session has no chain: its leaf and the intermediates remembered from that leaf's last full handshake
    (:mod:`~broker.identity.spiffetls.resumption`). Fails closed with :class:`PeerChainUnavailableError` when
    neither accessor exists or the peer's chain is not known.
    """
    return _parsed(_peer_chain_der(ssl_object))


def _peer_chain_der(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[bytes]:
    ders = _unverified_chain_der(ssl_object)
    if not ders and getattr(ssl_object, "session_reused", False):
        leaf = ssl_object.getpeercert(binary_form=True)
        ders = REMEMBERED_INTERMEDIATES.chain_for(leaf) if leaf else []
    elif getattr(ssl_object, "server_side", False):
        REMEMBERED_INTERMEDIATES.remember(ders)
    if not ders:
        raise PeerChainUnavailableError("the peer's certificate chain is not available")
    return ders


def _parsed(ders: list[bytes]) -> list[x509.Certificate]:
    try:
        return [x509.load_der_x509_certificate(der) for der in ders]
    except ValueError:
        raise PeerChainUnavailableError("the peer's certificate chain cannot be parsed") from None


def _unverified_chain_der(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[bytes]:
    public = getattr(ssl_object, "get_unverified_chain", None)
    if callable(public):  # Python 3.13+
        items: object = public()
    else:
        private = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
        if not callable(private):
            raise PeerChainUnavailableError("this Python's ssl module does not expose the peer's certificate chain")
        items = private()
    if items is None:
        return []
    if not isinstance(items, list):
        raise PeerChainUnavailableError("unexpected peer chain from the ssl module")
    return [_der_of(item) for item in items]


def _der_of(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    public_bytes = getattr(item, "public_bytes", None)  # _ssl.Certificate (Python 3.10-3.12)
    der = public_bytes(_ssl.ENCODING_DER) if callable(public_bytes) else None
    if not isinstance(der, bytes):
        raise PeerChainUnavailableError("unexpected certificate in the peer chain from the ssl module")
    return der


def _new_server_context(
    source: X509ContextSource, verify_mode: ssl.VerifyMode, *, cls: type[ssl.SSLContext]
) -> ssl.SSLContext:
    ctx = cls(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.num_tickets = TICKETS_PER_HANDSHAKE  # a resumed session's chain: broker.identity.spiffetls.resumption
    ctx.verify_mode = verify_mode
    _load_roots(ctx, source.x509_bundles())
    _load_svid(ctx, source.x509_svid())
    return ctx


def _client_roots(source: X509ContextSource, server_id: ServerIdMatcher) -> X509BundleSet:
    bundles = source.x509_bundles()
    if isinstance(server_id, SpiffeId):
        own = bundles.get(server_id.trust_domain)
        return {server_id.trust_domain: own} if own is not None else {}
    return bundles


def _bind(ctx: SourceSSLContext, source: X509ContextSource, *, server_id: ServerIdMatcher) -> None:
    ctx._source = source
    ctx._current = ctx
    ctx._unsubscribe = None
    ctx._renew = None
    ctx._renew_after = float("inf")
    ctx._clock = time.monotonic
    ctx.server_id = server_id


def _load_roots(ctx: ssl.SSLContext, bundles: Mapping[Any, Any]) -> None:
    """Trust the X.509 authorities of every bundle (no system roots are ever loaded)."""
    pem = b"".join(bundle.to_pem() for bundle in bundles.values())
    if pem:
        ctx.load_verify_locations(cadata=pem.decode("ascii"))


def _load_svid(ctx: ssl.SSLContext, svid: X509Svid) -> None:
    """Load the SVID's chain and key without ever leaving the key readable on disk."""
    with _private_file(svid.chain_pem(), "svid-chain") as cert_path, _private_file(svid.key_pem(), "svid-key") as key:
        ctx.load_cert_chain(certfile=cert_path, keyfile=key)


@contextlib.contextmanager
def _private_file(data: bytes, name: str) -> Iterator[str]:
    """A readable path holding ``data``: a memfd (never on disk) or a 0600 file in a 0700 dir, removed after."""
    if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            _write_all(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    directory = tempfile.mkdtemp(prefix="spiffe-broker-")  # created 0700
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.rmdir(directory)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
