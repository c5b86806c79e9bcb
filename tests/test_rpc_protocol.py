"""Our gRPC service definition: the same wire format as the one tritonclient.grpc speaks, and generated
modules that match the committed .proto.

Our stubs and tritonclient's register the same `inference.*` protobuf names and cannot share a process
(kserve/kserve#3099): ours are described by a subprocess, tritonclient's are read here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor
from tritonclient.grpc import service_pb2 as triton_pb2

from tests.conftest import ROOT

PROTOCOL = Path("serve") / "protocol"
PROTO = PROTOCOL / "open_inference_grpc.proto"
GENERATED = ("open_inference_grpc_pb2.py", "open_inference_grpc_pb2.pyi", "open_inference_grpc_pb2_grpc.py")

DESCRIBE = '''
import json

def fields(message):
    return {f.name: [f.number, f.type, f.is_repeated, f.message_type.full_name if f.message_type else None]
            for f in message.fields}

def messages(message):
    yield message
    for nested in message.nested_types:
        yield from messages(nested)

from serve.protocol import open_inference_grpc_pb2 as pb
service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
print(json.dumps({
    "package": pb.DESCRIPTOR.package, "service": service.full_name,
    "methods": {m.name: [m.input_type.full_name, m.output_type.full_name] for m in service.methods},
    "messages": {m.full_name: fields(m) for top in pb.DESCRIPTOR.message_types_by_name.values()
                 for m in messages(top)},
}))
'''


def describe(message: Descriptor) -> dict[str, list[Any]]:
    return {f.name: [f.number, f.type, f.is_repeated, f.message_type.full_name if f.message_type else None]
            for f in message.fields}


@pytest.fixture(scope="module")
def ours() -> dict[str, Any]:
    output = subprocess.run([sys.executable, "-c", DESCRIBE], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(output.stdout)  # type: ignore[no-any-return]


def test_the_service_and_its_methods_are_the_ones_tritonclient_calls(ours: dict[str, Any]) -> None:
    triton_service = triton_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert (ours["package"], ours["service"]) == ("inference", triton_service.full_name)
    for name, (request, response) in ours["methods"].items():
        method = triton_service.methods_by_name[name]
        assert [method.input_type.full_name, method.output_type.full_name] == [request, response]


def test_every_message_has_tritonclients_field_numbers_and_types(ours: dict[str, Any]) -> None:
    pool = triton_pb2.DESCRIPTOR.pool
    for name, fields in ours["messages"].items():
        assert fields == describe(pool.FindMessageTypeByName(name)), name
    assert {"inference.RepositoryIndexResponse.ModelIndex", "inference.ModelInferResponse"} <= ours["messages"].keys()


@pytest.mark.slow
def test_regenerating_the_stubs_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / PROTOCOL).mkdir(parents=True)
    (tmp_path / PROTO).write_bytes((ROOT / PROTO).read_bytes())
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.",
                    "--grpc_python_out=.", str(PROTO)], cwd=tmp_path, check=True)
    for name in GENERATED:
        assert (tmp_path / PROTOCOL / name).read_text() == (ROOT / PROTOCOL / name).read_text(), (
            f"{PROTOCOL / name} is stale: run `make protos`")
