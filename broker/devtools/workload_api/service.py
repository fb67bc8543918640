"""gRPC glue for the ``SpiffeWorkloadAPI`` service on grpclib, written by hand (five methods).

The messages are py-spiffe's generated classes (``spiffe._proto.workload_pb2``): py-spiffe registers its compiled
``workload.proto`` in the default descriptor pool on import, and a second compiled copy of the same (package-less)
file in one process fails with a duplicate-symbol error. ``proto/spiffe/workload/workload.proto`` is the project's
copy of the definition; ``scripts/check-workload-proto.py`` proves it equals py-spiffe's descriptor, and the unit
tests prove this table equals the service in that descriptor. The proto has no package, so the wire paths are
``/SpiffeWorkloadAPI/<Method>`` (SPIFFE Workload API §3).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from grpclib.const import Cardinality, Handler
from grpclib.exceptions import GRPCError
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
        self.calls: Counter[tuple[str, str]] = Counter()  # (method, "ok" or the gRPC status name): for the metrics

    def __mapping__(self) -> dict[str, Handler]:
        impl, counted = self._impl, self._counted
        return {
            method_path("FetchX509SVID"): Handler(
                counted("FetchX509SVID", impl.fetch_x509_svid),
                Cardinality.UNARY_STREAM, pb.X509SVIDRequest, pb.X509SVIDResponse
            ),
            method_path("FetchX509Bundles"): Handler(
                counted("FetchX509Bundles", impl.fetch_x509_bundles),
                Cardinality.UNARY_STREAM, pb.X509BundlesRequest, pb.X509BundlesResponse
            ),
            method_path("FetchJWTSVID"): Handler(
                counted("FetchJWTSVID", impl.fetch_jwt_svid),
                Cardinality.UNARY_UNARY, pb.JWTSVIDRequest, pb.JWTSVIDResponse
            ),
            method_path("FetchJWTBundles"): Handler(
                counted("FetchJWTBundles", impl.fetch_jwt_bundles),
                Cardinality.UNARY_STREAM, pb.JWTBundlesRequest, pb.JWTBundlesResponse
            ),
            method_path("ValidateJWTSVID"): Handler(
                counted("ValidateJWTSVID", impl.validate_jwt_svid),
                Cardinality.UNARY_UNARY, pb.ValidateJWTSVIDRequest, pb.ValidateJWTSVIDResponse
            ),
        }  # fmt: skip

    def _counted(self, method: str, handler: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        """``handler``, counting each call by its end: ``ok``, or the gRPC status it ended with."""

        async def call(stream: Any) -> None:
            outcome = "ok"
            try:
                await handler(stream)
            except GRPCError as exc:
                outcome = exc.status.name
                raise
            except asyncio.CancelledError:
                outcome = "cancelled"  # the client went away, or the server is stopping
                raise
            except Exception:
                outcome = "INTERNAL"  # what grpclib answers for a handler's bug
                raise
            finally:
                self.calls[method, outcome] += 1

        return call
