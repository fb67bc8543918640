"""The Workload API's protobuf messages (py-spiffe's generated ``workload_pb2``) and a grpcio client stub.

py-spiffe registers its compiled ``workload.proto`` (no proto package) in the process on import, and a second
compiled copy fails with a duplicate-symbol error, so the broker uses py-spiffe's generated message module (see
docs/architecture.md, "Protos"). Importing it as ``spiffe._proto.workload_pb2`` would first run py-spiffe's
package ``__init__``, which loads its whole client (PyJWT, pyOpenSSL, pyasn1, ...: about 6 MiB resident in every
sidecar) that the broker never uses. So the generated module is loaded by file under its own module name: a later
``import spiffe`` in the same process finds it in ``sys.modules`` and the proto is still registered once.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc  # type: ignore[import-untyped]

from broker.config import TCP_ADDRESS

__all__ = [
    "WORKLOAD_METADATA",
    "WORKLOAD_METHODS",
    "WorkloadApiStub",
    "describe_rpc_error",
    "grpc_target",
    "workload_pb2",
]

_MODULE = "spiffe._proto.workload_pb2"


def _load_messages() -> ModuleType:
    loaded = sys.modules.get(_MODULE)
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("spiffe")  # finds the package without running its __init__
    if package is None or package.origin is None:
        raise ImportError("py-spiffe (the 'spiffe' package) is not installed")
    spec = importlib.util.spec_from_file_location(_MODULE, Path(package.origin).parent / "_proto" / "workload_pb2.py")
    if spec is None or spec.loader is None:
        raise ImportError("py-spiffe's generated workload_pb2 module is missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_MODULE]
        raise
    return module


workload_pb2: Any = _load_messages()

# SPIFFE Workload API §5-§6: method -> (streaming response?, request type, response type).
WORKLOAD_METHODS: dict[str, tuple[bool, Any, Any]] = {
    "FetchX509SVID": (True, workload_pb2.X509SVIDRequest, workload_pb2.X509SVIDResponse),
    "FetchX509Bundles": (True, workload_pb2.X509BundlesRequest, workload_pb2.X509BundlesResponse),
    "FetchJWTSVID": (False, workload_pb2.JWTSVIDRequest, workload_pb2.JWTSVIDResponse),
    "FetchJWTBundles": (True, workload_pb2.JWTBundlesRequest, workload_pb2.JWTBundlesResponse),
    "ValidateJWTSVID": (False, workload_pb2.ValidateJWTSVIDRequest, workload_pb2.ValidateJWTSVIDResponse),
}


class WorkloadApiStub:
    """A grpcio client stub for service ``SpiffeWorkloadAPI`` (wire paths ``/SpiffeWorkloadAPI/<Method>``)."""

    def __init__(self, channel: Any) -> None:
        for name, (streaming, request, response) in WORKLOAD_METHODS.items():
            factory = channel.unary_stream if streaming else channel.unary_unary
            callable_ = factory(
                f"/SpiffeWorkloadAPI/{name}",
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            )
            setattr(self, name, callable_)

    def __getattr__(self, name: str) -> Any:  # for the type checker: methods are set in __init__
        raise AttributeError(name)


# SPIFFE Workload API §5: every request carries this metadata (a server refuses others with InvalidArgument).
WORKLOAD_METADATA = (("workload.spiffe.io", "true"),)
_HINTS = {"UNAVAILABLE": " (is the agent running?)", "PERMISSION_DENIED": " (is this workload registered?)"}


def grpc_target(address: str) -> str:
    """grpcio's target for a Workload API address: ``unix:///path`` as is, ``tcp://ip:port`` as ``ipv4:ip:port``."""
    tcp = TCP_ADDRESS.fullmatch(address)
    return "ipv4:" + tcp.group(1) if tcp else address


def describe_rpc_error(exc: BaseException) -> str:
    """A log line for a failed call: the gRPC status and details, with a hint for the common causes."""
    if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call):
        code = exc.code().name
        return f"{code}: {exc.details()}{_HINTS.get(code, '')}"
    return f"bad response: {exc}"
