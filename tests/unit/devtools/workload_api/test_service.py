"""The hand-written grpclib glue equals the service in py-spiffe's descriptor, and so does our proto copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from grpclib.const import Cardinality
from spiffe._proto import workload_pb2 as pb

from broker.devtools.workload_api.handlers import WorkloadApiHandlers
from broker.devtools.workload_api.service import SERVICE_NAME, SpiffeWorkloadApiService

ROOT = Path(__file__).resolve().parents[4]


def test_glue_matches_py_spiffe_service_descriptor() -> None:
    service = pb.DESCRIPTOR.services_by_name[SERVICE_NAME]
    mapping = SpiffeWorkloadApiService(WorkloadApiHandlers.__new__(WorkloadApiHandlers)).__mapping__()
    assert set(mapping) == {f"/{service.full_name}/{method.name}" for method in service.methods}
    for method in service.methods:
        handler = mapping[f"/{service.full_name}/{method.name}"]
        streaming = (method.client_streaming, method.server_streaming)
        expected = {
            (False, False): Cardinality.UNARY_UNARY,
            (False, True): Cardinality.UNARY_STREAM,
        }[streaming]
        assert handler.cardinality is expected, method.name
        assert handler.request_type.DESCRIPTOR is method.input_type, method.name
        assert handler.reply_type.DESCRIPTOR is method.output_type, method.name


def test_project_proto_matches_py_spiffe() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check-workload-proto.py")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
