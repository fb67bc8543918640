"""gRPC glue for the ``SpiffeWorkloadAPI`` service on grpclib, written by hand (five methods).

The messages are py-spiffe's generated classes (``spiffe._proto.workload_pb2``): py-spiffe registers its compiled
``workload.proto`` in the default descriptor pool on import, and a second compiled copy of the same (package-less)
file in one process fails with a duplicate-symbol error. ``proto/spiffe/workload/workload.proto`` is the project's
copy of the definition; ``scripts/check-workload-proto.py`` proves it equals py-spiffe's descriptor, and the unit
tests prove this table equals the service in that descriptor. The proto has no package, so the wire paths are
``/SpiffeWorkloadAPI/<Method>`` (SPIFFE Workload API §3).
"""

from __future__ import annotations

from typing import Protocol

from grpclib.const import Cardinality, Handler
from grpclib.server import Stream

from broker.identity.workloadapi.pb import workload_pb2 as pb

__all__ = ["SERVICE_NAME", "SpiffeWorkloadApiService", "WorkloadApiImpl", "method_path"]

SERVICE_NAME = "SpiffeWorkloadAPI"


def method_path(method: str) -> str:
    """The gRPC ``:path`` of a method, e.g. ``/SpiffeWorkloadAPI/FetchX509SVID``."""
    return f"/{SERVICE_NAME}/{method}"


class WorkloadApiImpl(Protocol):
    """The five RPCs, each given the grpclib server stream of its call."""

    async def fetch_x509_svid(self, stream: Stream[pb.X509SVIDRequest, pb.X509SVIDResponse]) -> None: ...

    async def fetch_x509_bundles(self, stream: Stream[pb.X509BundlesRequest, pb.X509BundlesResponse]) -> None: ...

    async def fetch_jwt_svid(self, stream: Stream[pb.JWTSVIDRequest, pb.JWTSVIDResponse]) -> None: ...

    async def fetch_jwt_bundles(self, stream: Stream[pb.JWTBundlesRequest, pb.JWTBundlesResponse]) -> None: ...

    async def validate_jwt_svid(
        self, stream: Stream[pb.ValidateJWTSVIDRequest, pb.ValidateJWTSVIDResponse]
    ) -> None: ...


class SpiffeWorkloadApiService:
    """A grpclib servable (``__mapping__``) routing the Workload API's methods to a :class:`WorkloadApiImpl`."""

    def __init__(self, impl: WorkloadApiImpl) -> None:
        self._impl = impl

    def __mapping__(self) -> dict[str, Handler]:
        impl = self._impl
        return {
            method_path("FetchX509SVID"): Handler(
                impl.fetch_x509_svid, Cardinality.UNARY_STREAM, pb.X509SVIDRequest, pb.X509SVIDResponse
            ),
            method_path("FetchX509Bundles"): Handler(
                impl.fetch_x509_bundles, Cardinality.UNARY_STREAM, pb.X509BundlesRequest, pb.X509BundlesResponse
            ),
            method_path("FetchJWTSVID"): Handler(
                impl.fetch_jwt_svid, Cardinality.UNARY_UNARY, pb.JWTSVIDRequest, pb.JWTSVIDResponse
            ),
            method_path("FetchJWTBundles"): Handler(
                impl.fetch_jwt_bundles, Cardinality.UNARY_STREAM, pb.JWTBundlesRequest, pb.JWTBundlesResponse
            ),
            method_path("ValidateJWTSVID"): Handler(
                impl.validate_jwt_svid, Cardinality.UNARY_UNARY, pb.ValidateJWTSVIDRequest, pb.ValidateJWTSVIDResponse
            ),
        }
