"""Property (hypothesis): any ModelInferRequest over gRPC is answered exactly as the same request over
the V2 REST route: the same status family (never UNKNOWN or INTERNAL), the same error message, the same
predictions. Both go to one real server; requests are built with tritonclient's protobuf messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.conftest import ROWS, Server

# The REST status that means what each gRPC code means here.
CODES = {200: grpc.StatusCode.OK, 400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
         413: grpc.StatusCode.RESOURCE_EXHAUSTED}
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
GOOD = [v for row in ROWS[:20] for k, v in row.items() if k != "MEDV"]


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def rest(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@st.composite
def tensors(draw: st.DrawFn, raw: bool) -> tuple[pb.ModelInferRequest.InferInputTensor, bytes | None]:
    # Mostly a well-formed tensor, each part spoilt now and then, so that both answers and refusals are common.
    name = draw(st.sampled_from(["features"] * 12 + ["CRIM", "lstat", "black", "x", ""]))
    datatype = draw(st.sampled_from(["FP32"] * 8 + ["FP64"] * 3 + ["INT32", "BYTES", ""]))
    rows = draw(st.sampled_from([1, 1, 2, 3, 0]))
    shape = draw(st.sampled_from([[rows, 13]] * 12 + [[rows], [rows, 1], [rows, 12], [], [rows, 13, 1], [-1, 13]]))
    count = max(0, int(np.prod(shape))) + draw(st.sampled_from([0] * 12 + [1, -1]))
    odd = st.one_of(st.floats(-1e6, 1e6), st.just(1e39), st.just(float("nan")))
    spoilt = draw(st.integers(0, 9)) == 0
    values = [draw(odd if spoilt else st.sampled_from(GOOD)) for _ in range(max(count, 0))]
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    if raw:
        with np.errstate(over="ignore"):  # 1e39 becomes inf in FP32, as a client's would
            return tensor, np.array(values, "<f8" if datatype == "FP64" else "<f4").tobytes()
    # JSON cannot carry NaN or infinity: the typed path gets finite values (1e39 still overflows FP32 as FP64).
    finite = [v if abs(v) < 3e38 or datatype == "FP64" else 1.0 for v in values if v == v]
    (tensor.contents.fp64_contents if datatype == "FP64" else tensor.contents.fp32_contents).extend(finite)
    return tensor, None


@st.composite
def infer_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    raw = draw(st.booleans())
    pairs = draw(st.lists(tensors(raw), min_size=0, max_size=3) if draw(st.integers(0, 4)) == 0 else
                 st.lists(tensors(raw), min_size=1, max_size=1))
    request = pb.ModelInferRequest(model_name=draw(st.sampled_from(["linear"] * 5 + ["mlp"] * 4 + ["nope"])),
                                   id=draw(st.sampled_from(["", "req-1"])), inputs=[t for t, _ in pairs])
    if raw:
        request.raw_input_contents.extend(data for _, data in pairs if data is not None)
    for name in draw(st.sampled_from([[], [], ["MEDV"], ["price"]])):
        request.outputs.add(name=name)
    return request


def as_rest(request: pb.ModelInferRequest) -> tuple[bytes, dict[str, str]]:
    """The same request as a V2 REST body: typed contents as JSON data, raw contents as binary tensor data."""
    inputs: list[dict[str, Any]] = []
    for i, tensor in enumerate(request.inputs):
        item: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if request.raw_input_contents:
            item["parameters"] = {"binary_data_size": len(request.raw_input_contents[i])}
        else:
            contents = tensor.contents
            item["data"] = list(contents.fp64_contents if tensor.datatype == "FP64" else contents.fp32_contents)
        inputs.append(item)
    body: dict[str, Any] = {"inputs": inputs}
    if request.id:
        body["id"] = request.id
    if request.outputs:
        body["outputs"] = [{"name": output.name} for output in request.outputs]
    if not request.raw_input_contents:
        return json.dumps(body).encode(), {}
    body["parameters"] = {"binary_data_output": True}  # raw in, raw out, as over gRPC
    head = json.dumps(body).encode()
    return head + b"".join(request.raw_input_contents), {"Inference-Header-Content-Length": str(len(head))}


@PROPERTY
@given(request=infer_requests())
def test_grpc_answers_every_request_as_the_rest_route_does(stub: pb_grpc.GRPCInferenceServiceStub,
                                                          rest: httpx.Client, request: pb.ModelInferRequest) -> None:
    body, headers = as_rest(request)
    answer = rest.post(f"/v2/models/{request.model_name}/infer", content=body, headers=headers)
    try:
        response = stub.ModelInfer(request)
    except grpc.RpcError as error:
        event(f"refused: {error.code().name}")
        assert answer.status_code != 200 and error.code() == CODES[answer.status_code], (error, answer.text)
        assert error.details() == answer.json()["error"]
        return
    event("answered")
    assert answer.status_code == 200, answer.text
    if request.raw_input_contents:
        y = np.frombuffer(response.raw_output_contents[0], "<f4")
        header_length = int(answer.headers["inference-header-content-length"])
        np.testing.assert_array_equal(y, np.frombuffer(answer.content[header_length:], "<f4"))
    else:
        y = np.array(response.outputs[0].contents.fp32_contents, np.float32)
        np.testing.assert_array_equal(y, np.array(answer.json()["outputs"][0]["data"], np.float32).reshape(-1))
    assert response.id == request.id and len(y) == response.outputs[0].shape[0]
