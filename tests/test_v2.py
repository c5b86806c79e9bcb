"""Open Inference Protocol (KServe V2), driven by the unmodified tritonclient and by plain JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from starlette.testclient import TestClient
from tritonclient.utils import InferenceServerException

from serve.app import create_app
from serve.model import Model
from serve.settings import Settings
from serve.v2 import V2Codec
from tests.conftest import FEATURES, FIRST, MODEL_DIR, ROWS, Server, model_file

X = np.array([[row[k] for k in FEATURES] for row in ROWS], dtype=np.float32)


def batch(n: int) -> np.ndarray:
    return np.resize(X, (n, len(FEATURES)))  # the 506 rows repeated to n


@pytest.fixture(scope="module")
def triton_client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=60)


def predict_route(server: Server, model: str, x: np.ndarray) -> np.ndarray:
    response = httpx.post(f"{server.url}/models/{model}/predict", json={"instances": x.tolist()}, timeout=60)
    return np.array(response.json()["predictions"], dtype=np.float32)


def infer(client: triton.InferenceServerClient, model: str, x: np.ndarray, binary: bool) -> np.ndarray:
    tensor = triton.InferInput("features", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = None if binary else [triton.InferRequestedOutput("MEDV", binary_data=False)]
    result = client.infer(model, [tensor], outputs=outputs)
    return result.as_numpy("MEDV").reshape(-1)  # type: ignore[no-any-return, union-attr]


def test_server_health_and_metadata(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready("linear") and triton_client.is_model_ready("mlp", "1")
    assert "binary_tensor_data" in triton_client.get_server_metadata()["extensions"]


def test_model_metadata_names_tensors_features_and_ranges(triton_client: triton.InferenceServerClient) -> None:
    meta = triton_client.get_model_metadata("mlp")
    assert meta["platform"] == "onnx_onnxv1" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 13]}]
    assert meta["outputs"] == [{"name": name, "datatype": "FP32", "shape": shape} for name, shape in
                               (("MEDV", [-1, 1]), ("MEDV_lower", [-1, 1]), ("MEDV_upper", [-1, 1]),
                                ("contributions", [-1, 13]))]
    assert meta["parameters"]["feature_names"].split(",") == FEATURES
    assert json.loads(meta["parameters"]["training_ranges"])["PTRATIO"] == [12.6, 22.0]
    assert json.loads(meta["parameters"]["feature_aliases"]) == {"B": ["black"]}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("n", [1, 7, 10_000])
@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_tritonclient_infer_equals_the_predict_route(triton_client: triton.InferenceServerClient, server: Server,
                                                     model: str, n: int, binary: bool) -> None:
    x = batch(n)
    np.testing.assert_allclose(infer(triton_client, model, x, binary), predict_route(server, model, x), atol=1e-6)


def test_tritonclient_defaults_binary_in_and_out(triton_client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("features", [7, 13], "FP32")
    tensor.set_data_from_numpy(batch(7))
    result = triton_client.infer("linear", [tensor])
    assert result.get_output("MEDV")["parameters"]["binary_data_size"] == 28
    assert result.as_numpy("MEDV").shape == (7, 1)  # type: ignore[union-attr]


def test_the_asyncio_client_works_too(server: Server, triton_client: triton.InferenceServerClient) -> None:
    async def run() -> np.ndarray:
        client = triton_aio.InferenceServerClient(server.url.removeprefix("http://"))
        try:
            assert await client.is_server_ready() and await client.is_model_ready("mlp")
            tensor = triton_aio.InferInput("features", [7, 13], "FP32")
            tensor.set_data_from_numpy(batch(7))
            result = await client.infer("mlp", [tensor])
            return result.as_numpy("MEDV").reshape(-1)  # type: ignore[no-any-return, union-attr]
        finally:
            await client.close()

    np.testing.assert_allclose(asyncio.run(run()), infer(triton_client, "mlp", batch(7), True), atol=1e-6)


def test_tritonclient_errors_arrive_as_exceptions_with_the_message(triton_client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("features", [1, 13], "INT32")
    tensor.set_data_from_numpy(batch(1).astype(np.int32))
    with pytest.raises(InferenceServerException, match="FP32") as error:
        triton_client.infer("linear", [tensor])
    assert error.value.status() == "400"
    with pytest.raises(InferenceServerException, match="unknown model"):
        triton_client.get_model_metadata("nope")
    assert not triton_client.is_model_ready("linear", "2")


EXPLANATION_OUTPUTS = ("MEDV_lower", "MEDV_upper", "contributions")


def assert_as_the_explain_route(server: Server, model: str, x: np.ndarray, outputs: list[Any]) -> None:
    """MEDV, MEDV_lower, MEDV_upper and contributions for `x` are what the explain route answers."""
    prediction, lower, upper, contributions = outputs
    assert [a.shape for a in outputs] == [(len(x), 1)] * 3 + [(len(x), 13)]
    response = httpx.post(f"{server.url}/models/{model}/explain", json={"instances": x.tolist()}, timeout=60)
    for i, explanation in enumerate(response.json()["explanations"]):
        assert prediction[i, 0] == pytest.approx(explanation["prediction"], abs=1e-6)
        interval = explanation["interval"]
        assert (lower[i, 0], upper[i, 0]) == pytest.approx((interval["lower"], interval["upper"]), abs=1e-6)
        by_feature = {c["feature"]: c["contribution"] for c in explanation["contributions"]}
        np.testing.assert_allclose(contributions[i], [by_feature[f] for f in FEATURES], atol=1e-6)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_tritonclient_gets_the_explanation_outputs_it_asks_for_as_the_explain_route_has_them(
        triton_client: triton.InferenceServerClient, server: Server, model: str, binary: bool) -> None:
    x = batch(7)
    features = triton.InferInput("features", list(x.shape), "FP32")
    features.set_data_from_numpy(x, binary_data=binary)
    names = ("MEDV", *EXPLANATION_OUTPUTS)
    requested = [triton.InferRequestedOutput(n, binary_data=binary) for n in names]
    result = triton_client.infer(model, [features], outputs=requested)
    assert (result.get_output("contributions").get("parameters") is not None) is binary
    assert_as_the_explain_route(server, model, x, [result.as_numpy(n) for n in names])


def test_tritonclient_may_ask_for_one_explanation_output_alone(triton_client: triton.InferenceServerClient) -> None:
    features = triton.InferInput("features", [3, 13], "FP32")
    features.set_data_from_numpy(batch(3))
    result = triton_client.infer("linear", [features], outputs=[triton.InferRequestedOutput("MEDV_upper")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["MEDV_upper"]
    assert result.as_numpy("MEDV_upper").shape == (3, 1)  # type: ignore[union-attr]


def test_a_request_naming_no_outputs_answers_medv_alone(triton_client: triton.InferenceServerClient,
                                                         client: TestClient) -> None:
    features = triton.InferInput("features", [3, 13], "FP32")
    features.set_data_from_numpy(batch(3))
    assert [o["name"] for o in triton_client.infer("mlp", [features]).get_response()["outputs"]] == ["MEDV"]
    plain = v2(client, {"inputs": [tensor(batch(3).reshape(-1).tolist(), [3, 13])]}).json()
    assert [o["name"] for o in plain["outputs"]] == ["MEDV"]


def test_an_unknown_output_is_a_400_naming_the_models_outputs(client: TestClient) -> None:
    body = {"inputs": [tensor([FIRST[k] for k in FEATURES], [1, 13])], "outputs": [{"name": "shap"}]}
    response = v2(client, body)
    assert response.status_code == 400 and response.json() == {
        "error": "unknown output(s) shap; the model has 'MEDV', 'MEDV_lower', 'MEDV_upper', 'contributions'"}


# Plain JSON, in process.

def v2(client: TestClient, body: Any, path: str = "/v2/models/linear/infer", **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, **kwargs)


def tensor(data: Any, shape: list[int], datatype: str = "FP32", name: str = "features") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def first_prediction(client: TestClient) -> float:
    return float(client.post("/models/linear/predict", json=FIRST).json()["prediction"])


def test_json_data_may_be_flat_or_nested_and_fp64(client: TestClient) -> None:
    row = [FIRST[k] for k in FEATURES]
    for body in ({"inputs": [tensor(row, [1, 13])]}, {"inputs": [tensor([row], [1, 13])]},
                 {"inputs": [tensor(row, [1, 13], "FP64")]}):
        output = v2(client, body).json()["outputs"][0]
        assert output["shape"] == [1, 1] and output["data"][0] == pytest.approx(first_prediction(client), abs=1e-6)


def test_one_input_per_feature_is_accepted(client: TestClient) -> None:
    columns = [tensor([FIRST[k], FIRST[k]], [2, 1] if i % 2 else [2], name=k) for i, k in enumerate(reversed(FEATURES))]
    data = v2(client, {"inputs": columns}).json()["outputs"][0]["data"]
    assert data == pytest.approx([first_prediction(client)] * 2, abs=1e-6)


def test_a_per_feature_input_may_be_named_by_an_alias(client: TestClient) -> None:
    columns = [tensor([FIRST[k]], [1], name="black" if k == "B" else k.lower()) for k in FEATURES]
    assert v2(client, {"inputs": columns}).json()["outputs"][0]["data"] == pytest.approx([first_prediction(client)])


def test_a_feature_given_twice_through_an_alias_is_400_naming_both_inputs(client: TestClient) -> None:
    columns = [tensor([FIRST[k]], [1], name=k) for k in FEATURES] + [tensor([FIRST["B"]], [1], name="black")]
    response = v2(client, {"inputs": columns})
    assert response.status_code == 400 and "feature B given twice, as 'B' and 'black'" in response.json()["error"]


def test_id_is_echoed_unknown_parameters_ignored_and_warnings_reported(client: TestClient) -> None:
    row = [FIRST[k] for k in FEATURES]
    row[FEATURES.index("PTRATIO")] = 0.11
    body = v2(client, {"id": "req-7", "parameters": {"whatever": 1}, "inputs": [tensor(row, [1, 13])]}).json()
    assert body["id"] == "req-7" and body["model_name"] == "linear" and body["model_version"] == "1"
    warnings = json.loads(body["parameters"]["warnings"])
    assert warnings[0]["feature"] == "PTRATIO" and warnings[0]["record"] == 0


def test_requested_outputs_are_honoured(client: TestClient) -> None:
    row = [FIRST[k] for k in FEATURES]
    body = {"inputs": [tensor(row, [1, 13])], "outputs": [{"name": "MEDV", "parameters": {"binary_data": True}}]}
    response = v2(client, body)
    header_length = int(response.headers["inference-header-content-length"])
    head = json.loads(response.content[:header_length])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 4
    prediction = np.frombuffer(response.content[header_length:], "<f4")[0]
    assert prediction == pytest.approx(first_prediction(client), abs=1e-6)
    assert v2(client, {**body, "outputs": [{"name": "price"}]}).status_code == 400


def test_binary_input_is_read_after_the_json_header(client: TestClient) -> None:
    x = batch(3)
    head = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [3, 13],
                                   "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    response = v2(client, head + x.tobytes(), headers={"Inference-Header-Content-Length": str(len(head))})
    assert response.json()["outputs"][0]["shape"] == [3, 1]


@pytest.mark.parametrize("body, message", [
    ({"inputs": [tensor([1.0] * 12, [1, 13])]}, "needs 13 values"),
    ({"inputs": [tensor([1.0] * 26, [1, 13])]}, "needs 13 values"),
    ({"inputs": [tensor([1.0] * 13, [13])]}, "does not match"),
    ({"inputs": [tensor([1] * 13, [1, 13], "INT64")]}, "FP32"),
    ({"inputs": [tensor(["a"] * 13, [1, 13])]}, "element 0 is a string"),
    ({"inputs": [tensor([None] * 13, [1, 13])]}, "element 0 is null"),
    ({"inputs": [tensor([1e39] * 13, [1, 13])]}, "beyond FP32"),
    ({"inputs": [tensor([], [0, 13])]}, "empty"),
    ({"inputs": []}, "non-empty"),
    ({"inputs": [tensor([1.0], [1], name="CRIM")]}, "missing features: ZN"),
    ({"inputs": [tensor([1.0] * 13, [1, 13], name="x")]}, "unknown input 'x'"),
    ({"inputs": [tensor([1.0], [1], name="LSTATT")]}, "unknown input 'LSTATT' (did you mean LSTAT?)"),
    ({"inputs": [tensor([1.0] * 13, [1, 13])], "id": 5}, "'id' must be a string"),
    ([1, 2], "JSON object"),
])
def test_bad_inference_requests_are_400_naming_the_problem(client: TestClient, body: Any, message: str) -> None:
    response = v2(client, body)
    assert response.status_code == 400 and message in response.json()["error"]


@pytest.mark.parametrize("rows", [1, 100])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_binary_values_that_are_not_numbers_are_400_naming_row_and_feature(client: TestClient, rows: int,
                                                                            value: float) -> None:
    x = batch(rows)
    x[rows - 1, 5] = value
    head = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [rows, 13],
                                   "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    response = v2(client, head + x.tobytes(), headers={"Inference-Header-Content-Length": str(len(head))})
    assert response.status_code == 400
    assert f"row {rows - 1}, feature {FEATURES[5]}: value is NaN, infinite" in response.json()["error"]


def test_a_large_binary_batch_outside_the_training_range_is_answered_with_its_warnings(client: TestClient) -> None:
    x = batch(100)
    x[42, FEATURES.index("PTRATIO")] = 0.11
    head = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [100, 13],
                                   "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    body = v2(client, head + x.tobytes(), headers={"Inference-Header-Content-Length": str(len(head))}).json()
    warnings = json.loads(body["parameters"]["warnings"])
    assert [(w["record"], w["feature"]) for w in warnings] == [(42, "PTRATIO")]


def binary_head(rows: int, **fields: Any) -> bytes:
    return json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [rows, 13],
                                   "parameters": {"binary_data_size": rows * 13 * 4}}], **fields}).encode()


def test_a_binary_header_sent_again_answers_each_requests_own_values_and_checks_them_again(client: TestClient) -> None:
    head = binary_head(1)
    headers = {"Inference-Header-Content-Length": str(len(head))}
    first, second = X[:1], X[1:2]
    answers = [v2(client, head + x.tobytes(), headers=headers).json()["outputs"][0]["data"] for x in (first, second,
                                                                                                      first)]
    assert answers[0] == answers[2] != answers[1]
    assert answers[0][0] == pytest.approx(first_prediction(client), abs=1e-6)
    not_a_number = first.copy()
    not_a_number[0, 5] = np.nan
    response = v2(client, head + not_a_number.tobytes(), headers=headers)
    assert response.status_code == 400 and f"row 0, feature {FEATURES[5]}: value is NaN" in response.json()["error"]
    response = v2(client, head + first.tobytes()[:-4], headers=headers)
    assert response.status_code == 400 and "binary_data_size 52 exceeds the 48 binary bytes" in response.json()["error"]


def test_a_binary_answer_is_octet_stream_and_a_json_one_json_each_with_one_content_type(client: TestClient) -> None:
    head = binary_head(1, outputs=[{"name": "MEDV", "parameters": {"binary_data": True}}])
    answer = v2(client, head + X[:1].tobytes(), headers={"Inference-Header-Content-Length": str(len(head))})
    assert answer.headers.get_list("content-type") == ["application/octet-stream"]
    assert "inference-header-content-length" in answer.headers
    assert v2(client, {"inputs": [tensor(X[0].tolist(), [1, 13])]}).headers.get_list("content-type") == [
        "application/json"]


def test_headers_each_with_an_id_of_its_own_do_not_grow_the_codec_without_bound() -> None:
    codec = V2Codec(Model.load(model_file("linear")), max_batch=10)
    for number in range(1000):
        head = binary_head(1, id=str(number))
        assert codec.decode(head + X[:1].tobytes(), str(len(head)).encode()).id == str(number)
    assert len(codec._binary_headers) <= 256


def test_binary_sizes_are_checked(client: TestClient) -> None:
    head = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 13],
                                   "parameters": {"binary_data_size": 52}}]}).encode()
    response = v2(client, head + b"\0" * 52, headers={"Inference-Header-Content-Length": str(len(head))})
    assert response.status_code == 400 and "needs 104 bytes" in response.json()["error"]
    response = v2(client, head, headers={"Inference-Header-Content-Length": "999999"})
    assert response.status_code == 400 and "Inference-Header-Content-Length" in response.json()["error"]


def test_malformed_json_is_400(client: TestClient) -> None:
    assert v2(client, b"{").status_code == 400


@pytest.mark.parametrize("method, path, status", [
    ("POST", "/v2/models/nope/infer", 404),
    ("POST", "/v2/models/linear/versions/2/infer", 404),
    ("GET", "/v2/models/linear/versions/2", 404),
    ("GET", "/v2/models/linear/infer", 405),
    ("GET", "/v2/nothing", 404),
])
def test_every_error_answers_the_json_error_shape(client: TestClient, method: str, path: str, status: int) -> None:
    response = client.request(method, path, content=b"{}")
    assert response.status_code == status and isinstance(response.json()["error"], str)


def test_a_body_over_the_limit_is_413_json(client: TestClient) -> None:
    response = v2(client, b" " * (4 * 1024 * 1024 + 1))
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_versioned_routes_answer_like_the_plain_ones(client: TestClient) -> None:
    assert client.get("/v2/models/mlp/versions/1").json() == client.get("/v2/models/mlp").json()
    assert client.get("/v2/models/mlp/versions/1/ready").status_code == 200
    body = {"inputs": [tensor([FIRST[k] for k in FEATURES], [1, 13])]}
    versioned = v2(client, body, "/v2/models/linear/versions/1/infer")
    assert versioned.json()["outputs"] == v2(client, body).json()["outputs"]


def test_readiness_is_503_json_until_models_are_loaded() -> None:
    app = create_app(Settings(model_dir=MODEL_DIR, access_log="off"))
    not_started = TestClient(app)  # outside `with`: the lifespan (model loading) has not run
    for path in ("/health/ready", "/v2/health/ready"):
        response = not_started.get(path)
        assert response.status_code == 503 and "not ready" in response.json()["error"]
    assert not_started.get("/v2/health/live").status_code == 200
