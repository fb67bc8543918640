"""A frozen :class:`~broker.identity.source.SvidSource`: one X.509-SVID and its bundles, never changing.

The sync client builds each TLS context from a snapshot (in the calling thread) instead of sharing one context
that the Workload API thread re-loads: OpenSSL contexts must not change while another thread handshakes with
them, and a context that never changes keeps the certificate on the wire equal to the one the token names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from broker.identity.bundle import JwtBundleSet, X509BundleSet
from broker.identity.errors import SvidUnavailableError
from broker.identity.svid import JwtSvid, X509Svid

__all__ = ["SnapshotSource"]


class SnapshotSource:
    """An SvidSource whose SVID and X.509 bundles are fixed; it has no JWT side."""

    def __init__(self, svid: X509Svid, bundles: X509BundleSet) -> None:
        self._svid, self._bundles = svid, dict(bundles)

    def key(self) -> str:
        """Identifies the SVID and bundles: equal keys, interchangeable contexts."""
        digest = hashlib.sha256(b"".join(self._bundles[td].to_pem() for td in sorted(self._bundles, key=str)))
        return f"{self._svid.x5t_s256()}.{digest.hexdigest()}"

    def x509_svid(self) -> X509Svid:
        return self._svid

    def x509_bundles(self) -> X509BundleSet:
        return dict(self._bundles)

    def jwt_bundles(self) -> JwtBundleSet:
        return {}

    async def fetch_jwt_svid(self, audience: str) -> JwtSvid:
        raise SvidUnavailableError("a snapshot source has no JWT-SVIDs")

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        return lambda: None  # it never changes

    async def wait_ready(self, timeout: float) -> None:
        return None

    async def aclose(self) -> None:
        return None
