"""The seams through which everything gets its identity: one-method source Protocols, in go-spiffe's shape.

go-spiffe types each consumer by the one thing it reads (``x509svid.Source``, ``x509bundle.Source``,
``jwtbundle.Source``); so does this module:

* :class:`X509Source`: the current X.509-SVID (SPIFFE X509-SVID §4);
* :class:`X509BundleSource` and :class:`JwtBundleSource`: the trust bundles, per trust domain (SPIFFE Trust
  Domain and Bundle §4);
* :class:`JwtSvidSource`: a JWT-SVID for an audience, on demand (SPIFFE JWT-SVID §3; Workload API §6);
* :class:`Subscribable`: a change notification, for consumers that keep state derived from the SVID or bundles.

Combined Protocols exist only where a consumer truly reads several: :class:`SubscribableX509Source` (state bound to
the SVID), :class:`X509ContextSource` (what mTLS needs: the SVID, the X.509 bundles and their changes) and
:class:`SvidSource` (every side plus the lifecycle, for the code that owns a source). The implementations:
:class:`~broker.identity.workloadapi.WorkloadApiSvidSource` (the Workload API),
:class:`~broker.identity.files.FileSvidSource` (files) and :class:`~broker.identity.memory.InMemorySvidSource` (in
process).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from broker.identity.bundle import JwtBundleSet, X509BundleSet
from broker.identity.errors import SvidUnavailableError
from broker.identity.svid import JwtSvid, X509Svid

__all__ = [
    "JwtBundleSource",
    "JwtSvidSource",
    "Subscribable",
    "SubscribableX509Source",
    "SvidSource",
    "X509BundleSource",
    "X509ContextSource",
    "X509Source",
    "current_x5t",
]


class X509Source(Protocol):
    """The current X.509-SVID."""

    def x509_svid(self) -> X509Svid:
        """The current X.509-SVID; raises :class:`SvidUnavailableError` if there is none (or it expired)."""
        ...


class X509BundleSource(Protocol):
    """The X.509 bundles of the own and the federated trust domains."""

    def x509_bundles(self) -> X509BundleSet: ...


class JwtBundleSource(Protocol):
    """The JWT bundles of the own and the federated trust domains."""

    def jwt_bundles(self) -> JwtBundleSet: ...


class JwtSvidSource(Protocol):
    """JWT-SVIDs on demand."""

    async def fetch_jwt_svid(self, audience: str) -> JwtSvid: ...


class Subscribable(Protocol):
    """Change notifications of the X.509-SVID and the bundles."""

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (on the event loop) whenever the X.509-SVID or bundles change; returns unsubscribe."""
        ...


class SubscribableX509Source(X509Source, Subscribable, Protocol):
    """The current X.509-SVID and a notification when it changes: for state bound to the SVID (RFC 8705 §3)."""


class X509ContextSource(SubscribableX509Source, X509BundleSource, Protocol):
    """What mTLS needs: the current X.509-SVID, the X.509 bundles, and a notification when either changes."""


@runtime_checkable
class SvidSource(X509ContextSource, JwtBundleSource, JwtSvidSource, Protocol):
    """Every side of a source, and its lifecycle: for the code that starts and stops one."""

    async def wait_ready(self, timeout: float) -> None: ...

    async def aclose(self) -> None: ...


def current_x5t(source: X509Source) -> str | None:
    """RFC 8705 ``x5t#S256`` of the source's current X.509-SVID leaf, or None while it has none."""
    try:
        return source.x509_svid().x5t_s256()
    except SvidUnavailableError:
        return None
