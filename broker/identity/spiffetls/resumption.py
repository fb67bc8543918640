"""TLS session resumption on the broker's server contexts, without weakening client authentication.

A full mTLS handshake costs the server a signature, a certificate-chain verification and a key exchange, and on
asyncio's pure-Python TLS layer most of a new connection's CPU (docs/benchmarks.md). A client that resumes a
session (RFC 8446 §2.2, §4.6.1; RFC 5077 for TLS 1.2) skips the certificates and signatures. What that means for
client authentication and certificate-bound tokens:

* **The client is still the certificate holder.** Only a party that completed the original handshake (and so
  proved possession of the certificate's private key, RFC 8446 §4.4.3) holds the resumption secret the resumed
  session's PSK is derived from. The ticket itself is encrypted and authenticated with the server's ticket key, so
  the peer certificate it carries (``getpeercert()`` of a resumed session) is the one that handshake verified.
* **Tokens bind to that certificate.** RFC 8705 §3 binds a token to "the client certificate used for mutual TLS":
  for a resumed session it is the certificate of the session being resumed, and ``cnf.x5t#S256`` is computed
  from it. A client that resumes a session after rotating its own certificate gets tokens bound to the old one,
  just as on a keep-alive connection opened before the rotation (RFC 8705 §6.3); resumption lasts at most one
  ticket-key lifetime.
* **The SPIFFE checks still run on every connection.** A resumed session carries the peer's leaf but not the
  intermediates it sent (OpenSSL keeps no chain in a session), so the per-trust-domain verification
  (:func:`~broker.identity.spiffetls.context.peer_spiffe_id`) uses the intermediates remembered from the leaf's
  last full handshake (:class:`RememberedIntermediates`), or none. The whole chain is verified again against the
  *current* bundle of the leaf's trust domain, with the leaf's validity period: a leaf that expired, or a
  trust domain whose bundle dropped its authority, fails as it would on a full handshake. What is remembered
  only proposes certificates; it never vouches for one.
* **Ticket keys rotate.** OpenSSL draws a random ticket key for each context and ``ssl`` cannot replace it, so
  the server context is rebuilt (with a fresh key) every :data:`TICKET_KEY_LIFETIME` seconds and whenever the
  SVID or the bundles change. A ticket from an older key is not decrypted: that client does a full handshake.
  Tickets never leave the process, so replicas do not share them.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

__all__ = [
    "MAX_REMEMBERED_LEAVES",
    "REMEMBERED_INTERMEDIATES",
    "TICKETS_PER_HANDSHAKE",
    "TICKET_KEY_LIFETIME",
    "RememberedIntermediates",
]

TICKET_KEY_LIFETIME = 600.0
"""Seconds a context's ticket key encrypts new tickets (and decrypts old ones) before the context is replaced."""

TICKETS_PER_HANDSHAKE = 1
"""TLS 1.3 tickets sent after a handshake (OpenSSL's default is 2); each one costs the server an encryption."""

MAX_REMEMBERED_LEAVES = 8192
"""Leaves whose intermediates are remembered (least recently used first out). Only leaves sent with
intermediates are kept; a resumed session whose leaf was forgotten is verified without them and, if it needs
them, refused (the client's next full handshake succeeds)."""


class RememberedIntermediates:
    """Intermediates sent with each leaf in its last full handshake, by SHA-256 of the leaf's DER; bounded, LRU."""

    def __init__(self, max_leaves: int = MAX_REMEMBERED_LEAVES) -> None:
        self._max_leaves = max_leaves
        self._by_leaf: OrderedDict[bytes, tuple[bytes, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_leaf)

    def remember(self, chain: list[bytes]) -> None:
        """Keep the intermediates of ``chain`` (leaf first, DER); a chain of the leaf alone needs no entry."""
        if len(chain) < 2:
            return
        key = hashlib.sha256(chain[0]).digest()
        with self._lock:
            self._by_leaf[key] = tuple(chain[1:])
            self._by_leaf.move_to_end(key)
            while len(self._by_leaf) > self._max_leaves:
                self._by_leaf.popitem(last=False)

    def chain_for(self, leaf: bytes) -> list[bytes]:
        """``leaf`` followed by the intermediates remembered for it (none if it was never seen with any)."""
        key = hashlib.sha256(leaf).digest()
        with self._lock:
            intermediates = self._by_leaf.get(key, ())
            if intermediates:
                self._by_leaf.move_to_end(key)
        return [leaf, *intermediates]


REMEMBERED_INTERMEDIATES = RememberedIntermediates()
"""The process's memory of intermediates (server contexts of every listener share it: it only proposes)."""
