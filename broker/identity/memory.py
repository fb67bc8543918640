"""An in-memory :class:`~broker.identity.source.SvidSource`: a faithful twin of the Workload API source.

It issues from any :class:`SvidIssuer` in process (in this project, :class:`~broker.devtools.devca.DevCA`; an
integrator may pass its own test CA) and plays a Workload API (SPIFFE Workload API §5) push with ``rotate()``.
For tests, integrators' tests and ``spiffe-broker dev``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from broker.identity.bundle import JwtBundle, JwtBundleSet, X509Bundle, X509BundleSet
from broker.identity.errors import SvidUnavailableError
from broker.identity.spiffeid import SpiffeId, TrustDomain
from broker.identity.svid import JwtSvid, X509Svid

__all__ = ["InMemorySvidSource", "SvidIssuer"]


class SvidIssuer(Protocol):
    """A CA of one trust domain that issues X.509-SVIDs and JWT-SVIDs and publishes its bundles."""

    @property
    def trust_domain(self) -> TrustDomain: ...

    def issue_x509_svid(self, spiffe_id: SpiffeId, *, ttl: float) -> X509Svid: ...

    def mint_jwt_svid(self, spiffe_id: SpiffeId, audience: Sequence[str], *, ttl: float) -> JwtSvid: ...

    def x509_bundle(self) -> X509Bundle: ...

    def jwt_bundle(self) -> JwtBundle: ...


class InMemorySvidSource:
    """An :class:`SvidSource` that issues from an :class:`SvidIssuer` in process; ``rotate()`` issues a new SVID."""

    def __init__(
        self,
        ca: SvidIssuer,
        spiffe_id: SpiffeId,
        *,
        x509_ttl: float = 3600.0,
        jwt_ttl: float = 300.0,
        federated: Mapping[TrustDomain, SvidIssuer] | None = None,
    ) -> None:
        self._ca = ca
        self._spiffe_id = spiffe_id
        self._x509_ttl = x509_ttl
        self._jwt_ttl = jwt_ttl
        self._federated = dict(federated or {})
        self._svid: X509Svid | None = ca.issue_x509_svid(spiffe_id, ttl=x509_ttl)
        self._subscribers: list[Callable[[], None]] = []
        self.jwt_fetches = 0

    def x509_svid(self) -> X509Svid:
        if self._svid is None:
            raise SvidUnavailableError("no X.509-SVID")
        return self._svid

    def x509_bundles(self) -> X509BundleSet:
        bundles: dict[TrustDomain, X509Bundle] = {self._ca.trust_domain: self._ca.x509_bundle()}
        bundles.update({td: ca.x509_bundle() for td, ca in self._federated.items()})
        return bundles

    def jwt_bundles(self) -> JwtBundleSet:
        bundles: dict[TrustDomain, JwtBundle] = {self._ca.trust_domain: self._ca.jwt_bundle()}
        bundles.update({td: ca.jwt_bundle() for td, ca in self._federated.items()})
        return bundles

    async def fetch_jwt_svid(self, audience: str) -> JwtSvid:
        self.jwt_fetches += 1
        return self._ca.mint_jwt_svid(self._spiffe_id, [audience], ttl=self._jwt_ttl)

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    async def wait_ready(self, timeout: float) -> None:
        if self._svid is None:
            raise SvidUnavailableError("no X.509-SVID")

    async def aclose(self) -> None:
        self._subscribers.clear()

    def rotate(self) -> X509Svid:
        """Issue a fresh X.509-SVID and notify subscribers, as a Workload API push would."""
        self._svid = self._ca.issue_x509_svid(self._spiffe_id, ttl=self._x509_ttl)
        for callback in list(self._subscribers):
            callback()
        return self._svid

    def set_unavailable(self) -> None:
        self._svid = None

    @property
    def spiffe_id(self) -> SpiffeId:
        return self._spiffe_id
