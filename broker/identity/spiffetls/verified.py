"""Peers already verified, so a new TLS connection from a known certificate chain skips the chain verification.

A client that opens a new connection per request (or a follower that reconnects) presents the same chain each
time. :func:`~broker.identity.spiffetls.context.peer_spiffe_id` verifies a chain with
:func:`~broker.identity.x509svid.verify_x509_svid` (RFC 5280 path validation built for the leaf's own trust
domain); :class:`VerifiedChains` keeps the outcome of each *successful* verification, keyed by the exact chain
(the DER of every certificate, in order) and the peer's role, and answers again only while:

* the bundle of the leaf's trust domain is still equal to the one the chain was verified against (a bundle update
  verifies again, fail closed), and
* now is inside the validity period of every certificate of the chain (RFC 5280 §4.1.2.5; the latest
  ``notBefore`` and the earliest ``notAfter`` are kept, the bundle's authorities counted in the latter).

Those are the only inputs of the verification besides the chain itself, so a hit gives the answer a new
verification would. Failures are never kept. The memory is bounded (least recently used out).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from broker.identity.bundle import X509Bundle, X509BundleSet
from broker.identity.spiffeid import SpiffeId

__all__ = ["MAX_VERIFIED_CHAINS", "VERIFIED_CHAINS", "VerifiedChains", "VerifiedPeer"]

MAX_VERIFIED_CHAINS = 8192


@dataclass(frozen=True)
class VerifiedPeer:
    spiffe_id: SpiffeId
    leaf: x509.Certificate
    bundle: X509Bundle
    not_before: dt.datetime
    not_after: dt.datetime


def chain_key(ders: Sequence[bytes], role: str) -> bytes:
    """SHA-256 over the role and each certificate's length-prefixed DER: equal keys, equal chains."""
    digest = hashlib.sha256(role.encode())
    for der in ders:
        digest.update(len(der).to_bytes(4, "big"))
        digest.update(der)
    return digest.digest()


class VerifiedChains:
    """Successful chain verifications by :func:`chain_key`; bounded, least recently used out, thread-safe."""

    def __init__(self, max_chains: int = MAX_VERIFIED_CHAINS) -> None:
        self._max_chains = max_chains
        self._by_key: OrderedDict[bytes, VerifiedPeer] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_key)

    def lookup(self, key: bytes, bundles: X509BundleSet, now: dt.datetime) -> VerifiedPeer | None:
        """The verified peer for ``key`` if its trust domain's bundle is unchanged and every certificate is valid."""
        with self._lock:
            found = self._by_key.get(key)
            if found is not None:
                self._by_key.move_to_end(key)
        if found is None or not found.not_before <= now <= found.not_after:
            return None
        if bundles.get(found.spiffe_id.trust_domain) != found.bundle:
            return None
        return found

    def keep(self, key: bytes, spiffe_id: SpiffeId, chain: Sequence[x509.Certificate], bundle: X509Bundle) -> None:
        """Remember a chain that :func:`~broker.identity.x509svid.verify_x509_svid` just accepted."""
        peer = VerifiedPeer(
            spiffe_id=spiffe_id,
            leaf=chain[0],
            bundle=bundle,
            not_before=max(cert.not_valid_before_utc for cert in chain),
            not_after=min(cert.not_valid_after_utc for cert in (*chain, *bundle.authorities)),
        )
        with self._lock:
            self._by_key[key] = peer
            self._by_key.move_to_end(key)
            while len(self._by_key) > self._max_chains:
                self._by_key.popitem(last=False)


VERIFIED_CHAINS = VerifiedChains()
"""The process's memory of verified chains, shared by every listener and client context."""
