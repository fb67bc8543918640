#!/usr/bin/env python3
"""Fail when proto/spiffe/workload/workload.proto drifts from the Workload API py-spiffe registers.

The dev Workload API server (broker/devtools/workload_api) serves py-spiffe's generated message classes
(``spiffe._proto.workload_pb2``) because a second compiled copy of the package-less proto cannot be registered in
the same process. The project's copy of the proto is the reviewed source of truth; this script compiles it with
grpcio-tools (in a subprocess, into a descriptor set: nothing is registered here) and compares it with py-spiffe's
descriptor:

* messages (nested ones and map entries included): field names, numbers, types, labels, type names, oneofs;
* enums: value names and numbers;
* services: method names, input/output types, client/server streaming, and the gRPC wire path
  ``/<package.>Service/Method`` (so adding a ``package`` is drift: it would change every path on the wire);
* imports and syntax.

File names, options other than ``map_entry``, and comments are ignored. Exit status: 0 equal, 1 drift, 2 error.

    python scripts/check-workload-proto.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc_tools
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PROTO = "spiffe/workload/workload.proto"


def compile_project_proto() -> descriptor_pb2.FileDescriptorProto:
    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "workload.pb"
        command = [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{include}",
            f"--descriptor_set_out={out}", PROTO,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, cwd=PROTO_DIR, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"protoc failed on {PROTO}:\n{result.stderr}")
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (file,) = [f for f in descriptor_set.file if f.name == PROTO]
    return file


def py_spiffe_proto() -> descriptor_pb2.FileDescriptorProto:
    from spiffe._proto import workload_pb2

    file = descriptor_pb2.FileDescriptorProto()
    workload_pb2.DESCRIPTOR.CopyToProto(file)
    return file


def facts(file: descriptor_pb2.FileDescriptorProto) -> set[str]:
    """Everything that is part of the wire contract, one line per fact, package-relative names."""
    prefix = f".{file.package}." if file.package else "."
    lines = {f"syntax {file.syntax or 'proto2'}"}
    lines |= {f"import {dep}" for dep in file.dependency}
    for message in file.message_type:
        lines |= set(_message_facts(message, prefix, message.name))
    for enum in file.enum_type:
        lines |= set(_enum_facts(enum, enum.name))
    for service in file.service:
        wire_service = f"{file.package}.{service.name}" if file.package else service.name
        for method in service.method:
            lines.add(
                f"rpc {service.name}.{method.name}({_rel(method.input_type, prefix)})"
                f" returns ({_rel(method.output_type, prefix)})"
                f" client_streaming={method.client_streaming} server_streaming={method.server_streaming}"
                f" path=/{wire_service}/{method.name}"
            )
    return lines


def _message_facts(message: descriptor_pb2.DescriptorProto, prefix: str, name: str) -> Iterator[str]:
    yield f"message {name} map_entry={message.options.map_entry}"
    for field in message.field:
        type_name = descriptor_pb2.FieldDescriptorProto.Type.Name(field.type)
        label = descriptor_pb2.FieldDescriptorProto.Label.Name(field.label)
        oneof = field.oneof_index if field.HasField("oneof_index") else "-"
        yield (
            f"field {name}.{field.name} = {field.number} {label} {type_name} {_rel(field.type_name, prefix)}"
            f" oneof={oneof} proto3_optional={field.proto3_optional}"
        )
    for index, oneof_decl in enumerate(message.oneof_decl):
        yield f"oneof {name}[{index}] {oneof_decl.name}"
    for nested in message.nested_type:
        yield from _message_facts(nested, prefix, f"{name}.{nested.name}")
    for enum in message.enum_type:
        yield from _enum_facts(enum, f"{name}.{enum.name}")


def _enum_facts(enum: descriptor_pb2.EnumDescriptorProto, name: str) -> Iterator[str]:
    for value in enum.value:
        yield f"enum {name}.{value.name} = {value.number}"


def _rel(type_name: str, prefix: str) -> str:
    """``.pkg.X509SVID`` -> ``X509SVID``; types of other packages keep their full name."""
    if not type_name:
        return "-"
    if type_name.startswith(prefix):
        return type_name[len(prefix) :]
    return type_name.removeprefix(".")


def main() -> int:
    try:
        ours, theirs = facts(compile_project_proto()), facts(py_spiffe_proto())
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"check-workload-proto: {exc}", file=sys.stderr)
        return 2
    if ours == theirs:
        print(f"check-workload-proto: proto/{PROTO} matches py-spiffe's workload.proto ({len(ours)} facts)")
        return 0
    print(f"check-workload-proto: proto/{PROTO} differs from py-spiffe's workload.proto", file=sys.stderr)
    for line in sorted(ours - theirs):
        print(f"  only in proto/{PROTO}: {line}", file=sys.stderr)
    for line in sorted(theirs - ours):
        print(f"  only in py-spiffe:     {line}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
