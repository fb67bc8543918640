"""The seam through which everything gets its identity: :class:`SvidSource`.

Production code passes a :class:`~broker.identity.workload_source.WorkloadApiSvidSource` (SPIRE's Workload API
through py-spiffe); tests pass an :class:`~broker.devtools.source.InMemorySvidSource` backed by a dev CA.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from broker.identity.bundle import JwtBundleSet, X509BundleSet
from broker.identity.errors import SvidUnavailableError
from broker.identity.svid import JwtSvid, X509Svid

__all__ = ["SvidSource", "current_x5t"]


@runtime_checkable
class SvidSource(Protocol):
    """Current X.509-SVID and bundles, JWT-SVIDs on demand, and change notifications."""

    def x509_svid(self) -> X509Svid:
        """The current X.509-SVID; raises :class:`SvidUnavailableError` if there is none (or it expired)."""
        ...

    def x509_bundles(self) -> X509BundleSet: ...

    def jwt_bundles(self) -> JwtBundleSet: ...

    async def fetch_jwt_svid(self, audience: str) -> JwtSvid: ...

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (on the event loop) whenever the X.509-SVID or bundles change; returns unsubscribe."""
        ...

    async def wait_ready(self, timeout: float) -> None: ...

    async def aclose(self) -> None: ...


def current_x5t(source: SvidSource) -> str | None:
    """RFC 8705 ``x5t#S256`` of the source's current X.509-SVID leaf, or None while it has none."""
    try:
        return source.x509_svid().x5t_s256()
    except SvidUnavailableError:
        return None
