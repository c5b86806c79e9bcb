"""The Open Inference Protocol over gRPC, driven by the unmodified tritonclient.grpc (sync and asyncio)
and by tritonclient's own protobuf messages on a plain grpc channel.

This process imports tritonclient.grpc, whose generated modules register the `inference.*` protobuf
messages; our server's stubs register the same names and would clash (kserve/kserve#3099). So the
server always runs in a subprocess (`running_server`), and nothing here imports serve.rpc or
serve.protocol; tests/test_rpc_protocol.py compares the two definitions across processes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from tests.conftest import FEATURES, FIRST, Server, running_server
from tests.test_server import raw_request, read_response
from tests.test_v2 import EXPLANATION_OUTPUTS, assert_as_the_explain_route, batch, predict_route

TOKEN = "s3cret"


@pytest.fixture(scope="module")
def client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.grpc_address)


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def infer(client: triton.InferenceServerClient, model: str, x: np.ndarray, **kwargs: object) -> triton.InferResult:
    tensor = triton.InferInput("features", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor], **kwargs)  # type: ignore[arg-type]


def medv(result: triton.InferResult) -> np.ndarray:
    return result.as_numpy("MEDV").reshape(-1)  # type: ignore[no-any-return, union-attr]


def typed_request(values: list[float], shape: list[int], datatype: str = "FP32", model: str = "linear"
                  ) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name="features", datatype=datatype, shape=shape)
    (tensor.contents.fp64_contents if datatype == "FP64" else tensor.contents.fp32_contents).extend(values)
    return pb.ModelInferRequest(model_name=model, inputs=[tensor])


def refusal(call: object, *args: object, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call(*args, **kwargs)  # type: ignore[operator]
    return error.value


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("linear") and client.is_model_ready("mlp", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("linear", "2")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "housing-serving" and "model_repository" in server["extensions"]


def test_model_metadata_names_the_tensors(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata("mlp", as_json=True)
    assert (meta["name"], meta["versions"], meta["platform"]) == ("mlp", ["1"], "onnx_onnxv1")
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "13"]}]
    assert meta["outputs"] == [{"name": name, "datatype": "FP32", "shape": ["-1", width]} for name, width in
                               (("MEDV", "1"), ("MEDV_lower", "1"), ("MEDV_upper", "1"), ("contributions", "13"))]


@pytest.mark.parametrize("n", [1, 7, 10_000])
@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_tritonclient_grpc_infer_equals_the_predict_route(client: triton.InferenceServerClient, server: Server,
                                                          model: str, n: int) -> None:
    x = batch(n)
    np.testing.assert_allclose(medv(infer(client, model, x)), predict_route(server, model, x), atol=1e-6)


def test_the_asyncio_client_works_too(server: Server, client: triton.InferenceServerClient) -> None:
    async def run() -> np.ndarray:
        async with triton_aio.InferenceServerClient(server.grpc_address) as aio_client:
            assert await aio_client.is_server_live() and await aio_client.is_server_ready()
            assert await aio_client.is_model_ready("mlp")
            assert (await aio_client.get_model_metadata("mlp", as_json=True))["name"] == "mlp"
            tensor = triton_aio.InferInput("features", [7, 13], "FP32")
            tensor.set_data_from_numpy(batch(7))
            return medv(await aio_client.infer("mlp", [tensor]))

    np.testing.assert_allclose(asyncio.run(run()), medv(infer(client, "mlp", batch(7))), atol=1e-6)


def test_id_is_echoed_and_range_warnings_are_a_json_parameter(client: triton.InferenceServerClient) -> None:
    x = batch(1).copy()
    x[0, FEATURES.index("PTRATIO")] = 0.11
    response = infer(client, "linear", x, request_id="req-7").get_response()
    assert response.id == "req-7" and (response.model_name, response.model_version) == ("linear", "1")
    (warning,) = json.loads(response.parameters["warnings"].string_param)
    assert (warning["feature"], warning["record"]) == ("PTRATIO", 0)


def test_requested_outputs_are_honoured(client: triton.InferenceServerClient) -> None:
    result = infer(client, "linear", batch(3), outputs=[triton.InferRequestedOutput("MEDV")])
    assert medv(result).shape == (3,)
    with pytest.raises(InferenceServerException, match=r"unknown output\(s\) price; the model has 'MEDV', "
                                                       "'MEDV_lower', 'MEDV_upper', 'contributions'") as error:
        infer(client, "linear", batch(3), outputs=[triton.InferRequestedOutput("price")])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_requested_explanation_outputs_are_answered_as_the_explain_route_has_them(
        client: triton.InferenceServerClient, server: Server, model: str) -> None:
    x = batch(7)
    names = ("MEDV", *EXPLANATION_OUTPUTS)
    result = infer(client, model, x, outputs=[triton.InferRequestedOutput(name) for name in names])
    assert_as_the_explain_route(server, model, x, [result.as_numpy(name) for name in names])


def test_a_request_naming_no_outputs_answers_medv_alone(client: triton.InferenceServerClient) -> None:
    assert [o.name for o in infer(client, "mlp", batch(3)).get_response().outputs] == ["MEDV"]


def test_typed_contents_are_answered_with_the_requested_outputs_typed(stub: pb_grpc.GRPCInferenceServiceStub,
                                                                      client: triton.InferenceServerClient) -> None:
    x = batch(2)
    request = typed_request(x.reshape(-1).tolist(), [2, 13])
    request.outputs.add(name="contributions")
    request.outputs.add(name="MEDV")
    response = stub.ModelInfer(request)
    assert not response.raw_output_contents
    assert [(o.name, list(o.shape)) for o in response.outputs] == [("contributions", [2, 13]), ("MEDV", [2, 1])]
    raw = infer(client, "linear", x, outputs=[triton.InferRequestedOutput("contributions")]).as_numpy("contributions")
    np.testing.assert_allclose(np.reshape(response.outputs[0].contents.fp32_contents, (2, 13)), raw, atol=1e-6)


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_typed_contents_are_answered_with_typed_contents(stub: pb_grpc.GRPCInferenceServiceStub,
                                                         client: triton.InferenceServerClient, datatype: str) -> None:
    x = batch(7)
    response = stub.ModelInfer(typed_request(x.reshape(-1).tolist(), [7, 13], datatype))
    assert not response.raw_output_contents and list(response.outputs[0].shape) == [7, 1]
    typed = np.array(response.outputs[0].contents.fp32_contents, dtype=np.float32)
    np.testing.assert_allclose(typed, medv(infer(client, "linear", x)), atol=1e-6)


@pytest.mark.parametrize("request_, code, message", [
    (typed_request([1.0] * 13, [1, 13], model="nope"), "NOT_FOUND", "unknown model 'nope'; available: linear, mlp"),
    (typed_request([1.0] * 12, [1, 12]), "INVALID_ARGUMENT", "shape [1, 12] does not match the model's [N, 13]"),
    (typed_request([1.0] * 12, [1, 13]), "INVALID_ARGUMENT", "the shape needs 13 values, 'data' holds 12"),
    (typed_request([1.0] * 13, [1, 13], "INT32"), "INVALID_ARGUMENT", "datatype 'INT32' is not supported"),
    (typed_request([float("nan")] * 13, [1, 13]), "INVALID_ARGUMENT", "value is NaN, infinite or beyond FP32"),
    (typed_request([1e300] * 13, [1, 13], "FP64"), "INVALID_ARGUMENT", "value is NaN, infinite or beyond FP32"),
    (typed_request([1.0] * 13 * 10_001, [10_001, 13]), "RESOURCE_EXHAUSTED", "batch of 10001 rows is over the limit"),
    (pb.ModelInferRequest(model_name="linear"), "INVALID_ARGUMENT", "'inputs' must be a non-empty array"),
], ids=["unknown model", "shape", "length", "datatype", "NaN", "beyond FP32", "rows", "no inputs"])
def test_bad_requests_answer_their_code_and_the_rest_message(stub: pb_grpc.GRPCInferenceServiceStub,
                                                             request_: pb.ModelInferRequest, code: str,
                                                             message: str) -> None:
    error = refusal(stub.ModelInfer, request_)
    assert error.code() == getattr(grpc.StatusCode, code) and message in str(error.details())


def test_raw_bytes_are_checked_against_the_shape(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    tensor = pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=[2, 13])
    short = pb.ModelInferRequest(model_name="linear", inputs=[tensor], raw_input_contents=[b"\0" * 52])
    error = refusal(stub.ModelInfer, short)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs 104 bytes, binary_data_size is 52" in str(
        error.details())
    nan = pb.ModelInferRequest(model_name="linear", inputs=[tensor],
                               raw_input_contents=[np.full(26, np.nan, "<f4").tobytes()])
    assert "row 0, feature CRIM: value is NaN" in str(refusal(stub.ModelInfer, nan).details())
    unpaired = pb.ModelInferRequest(model_name="linear", inputs=[tensor, tensor], raw_input_contents=[b"\0" * 104])
    assert "raw_input_contents holds 1 tensors for 2 inputs" in str(refusal(stub.ModelInfer, unpaired).details())


def test_a_message_over_the_body_limit_is_resource_exhausted(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    tensor = pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=[100_000, 13])
    huge = pb.ModelInferRequest(model_name="linear", inputs=[tensor], raw_input_contents=[b"\0" * 5_200_000])
    assert refusal(stub.ModelInfer, huge).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_health_service_is_serving_and_reflection_lists_the_services(server: Server) -> None:
    with grpc.insecure_channel(server.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "inference.GRPCInferenceService"):
            assert health.Check(health_pb2.HealthCheckRequest(service=name)).status == \
                health_pb2.HealthCheckResponse.SERVING
        unknown = refusal(health.Check, health_pb2.HealthCheckRequest(service="nope"))
        assert unknown.code() == grpc.StatusCode.NOT_FOUND
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        (answer,) = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = {service.name for service in answer.list_services_response.service}
        assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services


def test_grpc_calls_are_counted_in_the_metrics(client: triton.InferenceServerClient, server: Server) -> None:
    infer(client, "linear", batch(5))
    with pytest.raises(InferenceServerException):
        infer(client, "nope", batch(1))
    exposition = httpx.get(server.url + "/metrics").text
    assert 'serve_requests_total{route="grpc:ModelInfer",model="linear",version="1",status="200"}' in exposition
    assert 'serve_requests_total{route="grpc:ModelInfer",model="",version="",status="404"}' in exposition


def test_repository_index_unload_and_load(client: triton.InferenceServerClient) -> None:
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {(e["name"], e["version"], e["state"]) for e in index} == {("linear", "1", "READY"), ("mlp", "1", "READY")}
    client.unload_model("mlp")
    try:
        assert not client.is_model_ready("mlp") and client.is_model_ready("linear")
        (entry,) = [e for e in client.get_model_repository_index(as_json=True)["models"] if e["name"] == "mlp"]
        assert entry["state"] == "UNAVAILABLE" and "unloaded" in entry["reason"]
        with pytest.raises(InferenceServerException, match="unknown model 'mlp'"):
            infer(client, "mlp", batch(1))
    finally:
        client.load_model("mlp")
    assert client.is_model_ready("mlp") and medv(infer(client, "mlp", batch(2))).shape == (2,)
    with pytest.raises(InferenceServerException, match="no model 'nope' in the model store") as error:
        client.load_model("nope")
    assert error.value.status() == "StatusCode.NOT_FOUND"


def test_with_auth_every_infer_and_repository_call_needs_the_token(tmp_path: Path) -> None:
    with running_server(tmp_path, env={"SERVE_AUTH_TOKEN": TOKEN}) as server:
        client = triton.InferenceServerClient(server.grpc_address)
        calls = [lambda **kw: infer(client, "linear", batch(1), **kw),
                 lambda **kw: client.get_model_repository_index(**kw),
                 lambda **kw: client.load_model("linear", **kw),
                 lambda **kw: client.unload_model("nope", **kw)]
        for call in calls:
            for headers in (None, {"authorization": "Bearer nope"}, {"authorization": f"Basic {TOKEN}"}):
                with pytest.raises(InferenceServerException, match="missing or wrong bearer token") as error:
                    call(headers=headers)
                assert error.value.status() == "StatusCode.UNAUTHENTICATED"
        right = {"authorization": f"Bearer {TOKEN}"}
        assert medv(infer(client, "linear", batch(1), headers=right)).shape == (1,)
        assert client.get_model_repository_index(headers=right)
        client.load_model("linear", headers=right)
        assert client.is_server_ready() and client.get_model_metadata("linear")  # open, as on REST


def test_overload_is_unavailable_with_the_rest_message(tmp_path: Path) -> None:
    with running_server(tmp_path, "--max-concurrency", "1") as server:
        port = int(server.url.rsplit(":", 1)[1])
        sock, rest = raw_request(port, json.dumps(FIRST).encode(), split=10)  # an HTTP request holds the only slot
        time.sleep(0.2)
        client = triton.InferenceServerClient(server.grpc_address)
        with pytest.raises(InferenceServerException, match="overloaded: too many requests in flight") as error:
            infer(client, "linear", batch(1))
        assert error.value.status() == "StatusCode.UNAVAILABLE"
        sock.sendall(rest)
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        sock.close()
        assert medv(infer(client, "linear", batch(1))).shape == (1,)


@pytest.mark.slow
def test_two_workers_share_the_grpc_port(tmp_path: Path) -> None:
    with running_server(tmp_path, "--workers", "2") as server:
        for _ in range(20):  # a new connection each time, so both workers take a share
            with triton.InferenceServerClient(server.grpc_address) as fresh:
                assert medv(infer(fresh, "linear", batch(3))).shape == (3,)
        series = 'serve_requests_total{route="grpc:ModelInfer",model="linear",version="1",status="200"} '
        assert httpx.get(server.url + "/metrics").text.split(series)[1].split()[0] == "20"
        assert server.log().count("Application startup complete") == 2 and "Traceback" not in server.log()


@pytest.mark.slow
def test_sigterm_lets_the_rpcs_in_flight_finish_then_exits_0(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        x = batch(10_000)
        outcomes: list[tuple[float, str]] = []  # (start time, status code name) of every RPC
        stop = threading.Event()

        def keep_inferring() -> None:
            with triton.InferenceServerClient(server.grpc_address) as own:
                while not stop.is_set():
                    start = time.monotonic()
                    try:
                        assert medv(infer(own, "mlp", x)).shape == (10_000,)
                        outcomes.append((start, "OK"))
                    except InferenceServerException as error:
                        outcomes.append((start, str(error.status()).removeprefix("StatusCode.")))
                        return

        threads = [threading.Thread(target=keep_inferring) for _ in range(4)]
        for thread in threads:
            thread.start()
        while len(outcomes) < 8:
            time.sleep(0.01)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=20) == 0
        stop.set()
        for thread in threads:
            thread.join(timeout=20)
    print(f"\nSIGTERM with 4 clients inferring 10,000 rows: {len(outcomes)} RPCs, "
          f"{sum(start >= signalled for start, _ in outcomes)} started after the signal; "
          f"codes {sorted({code for _, code in outcomes})}")
    assert all(code == "OK" for start, code in outcomes if start < signalled), outcomes
    # After the signal gRPC serves on while uvicorn drains HTTP, then stops: a new RPC is refused, UNAVAILABLE
    # once the port is closed, CANCELLED by grpc itself if it lands in the moment the server stops.
    assert {code for _, code in outcomes} <= {"OK", "UNAVAILABLE", "CANCELLED"}, outcomes
    assert any(code == "OK" and start >= signalled for start, code in outcomes)
    assert "Traceback" not in server.log() and '" 500 ' not in server.log()
