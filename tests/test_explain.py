"""POST /models/{model}/explain: each prediction with its interval, the baseline and the features'
contributions, from the graph's own outputs; the same bodies, errors and limits as predict."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import onnx
import pytest
from onnx import helper
from starlette.testclient import TestClient

from serve.app import create_app
from serve.errors import ModelLoadError
from serve.model import Model
from serve.settings import Settings
from tests.conftest import FEATURES, FIRST, MODEL_DIR, ROWS, Server
from tests.versions import put, without_explanations

MODELS = ("linear", "mlp")
OUT_OF_RANGE = {**FIRST, "PTRATIO": 0.11}


def explain(client: TestClient, model: str, body: Any, path: str = "explain") -> dict[str, Any]:
    response = client.post(f"/models/{model}/{path}", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def check_explanation(explanation: dict[str, Any], record: dict[str, float], prediction: float) -> None:
    """One record's explanation: as the specification of the route says it must be."""
    assert set(explanation) == {"prediction", "interval", "baseline", "contributions"}
    assert explanation["prediction"] == prediction
    interval = explanation["interval"]
    assert set(interval) == {"lower", "upper", "level"} and interval["level"] == 0.9
    assert interval["lower"] <= prediction <= interval["upper"]
    contributions = explanation["contributions"]
    assert sorted(c["feature"] for c in contributions) == sorted(FEATURES)
    assert all(set(c) == {"feature", "value", "contribution"} for c in contributions)
    assert all(c["value"] == pytest.approx(record[c["feature"]], rel=1e-6) for c in contributions)
    magnitudes = [abs(c["contribution"]) for c in contributions]
    assert magnitudes == sorted(magnitudes, reverse=True)
    total = sum(c["contribution"] for c in contributions)
    assert total == pytest.approx(prediction - explanation["baseline"], abs=1e-3)


@pytest.mark.parametrize("model", MODELS)
def test_a_record_is_explained_by_prediction_interval_baseline_and_contributions_largest_first(
        client: TestClient, model: str) -> None:
    answer = explain(client, model, FIRST)
    prediction = client.post(f"/models/{model}/predict", json=FIRST).json()["prediction"]
    assert answer["model"] == model and answer["version"] == "1" and answer["warnings"] == []
    check_explanation({k: v for k, v in answer.items() if k not in ("model", "version", "warnings")}, FIRST,
                      prediction)


@pytest.mark.parametrize("model", MODELS)
def test_a_batch_gets_one_explanation_per_record_in_order_and_predicts_warnings(client: TestClient, model: str) -> None:
    records = [ROWS[5], OUT_OF_RANGE, ROWS[100]]
    records = [{name: r[name] for name in FEATURES} for r in records]
    answer = explain(client, model, {"instances": [records[0], list(records[1].values()), records[2]]})
    predicted = client.post(f"/models/{model}/predict", json={"instances": records}).json()
    assert set(answer) == {"model", "version", "explanations", "warnings"}
    assert len(answer["explanations"]) == 3
    for explanation, record, prediction in zip(answer["explanations"], records, predicted["predictions"]):
        check_explanation(explanation, record, prediction)
    assert answer["warnings"] == predicted["warnings"] and answer["warnings"][0]["record"] == 1


def test_a_single_record_carries_predicts_warnings(client: TestClient) -> None:
    answer = explain(client, "mlp", OUT_OF_RANGE)
    assert answer["warnings"] == client.post("/models/mlp/predict", json=OUT_OF_RANGE).json()["warnings"]
    assert answer["warnings"][0]["message"] == "PTRATIO=0.11 is outside the training range [12.6, 22]"


def test_the_versioned_route_explains_with_that_version(client: TestClient) -> None:
    assert explain(client, "linear", FIRST, "versions/1/explain") == explain(client, "linear", FIRST)
    missing = client.post("/models/linear/versions/9/explain", json=FIRST)
    assert missing.status_code == 404 and "no ready version '9'" in missing.json()["error"]


def test_the_linear_models_contributions_are_its_coefficients_times_the_distance_from_the_means(
        client: TestClient) -> None:
    """A check independent of the graph: the contributions of a linear model are exact, and zero for the
    features it does not read."""
    meta = client.get("/models/linear").json()
    used = {f["name"] for f in meta["features"] if f["used_by_model"]}
    for c in explain(client, "linear", FIRST)["contributions"]:
        if c["feature"] not in used:
            assert c["contribution"] == 0.0


BAD_BODIES: list[tuple[bytes, dict[str, str]]] = [
    (b"{", {}),
    (b'"a string"', {}),
    (json.dumps({k: v for k, v in FIRST.items() if k != "LSTAT"}).encode(), {}),
    (json.dumps({**FIRST, "LSTATT": 1}).encode(), {}),
    (json.dumps({**FIRST, "RM": "six"}).encode(), {}),
    (json.dumps({**FIRST, "black": 1}).encode(), {}),
    (json.dumps(FIRST).replace('"RM": 6.575', '"RM": NaN').encode(), {}),
    (json.dumps(FIRST)[:-1].encode() + b', "RM": 7}', {}),
    (json.dumps({"instances": []}).encode(), {}),
    (json.dumps({"instances": [FIRST, [1, 2]]}).encode(), {}),
    (json.dumps({"instances": [FIRST], "extra": 1}).encode(), {}),
    (json.dumps(FIRST).encode(), {"Content-Type": "text/plain"}),
]


@pytest.mark.parametrize("body, headers", BAD_BODIES)
def test_a_bad_body_gets_the_same_refusal_as_predict(client: TestClient, body: bytes, headers: dict[str, str]) -> None:
    predicted = client.post("/models/linear/predict", content=body, headers=headers)
    explained = client.post("/models/linear/explain", content=body, headers=headers)
    assert 400 <= explained.status_code < 500
    assert (explained.status_code, explained.json()) == (predicted.status_code, predicted.json())


def test_a_batch_over_the_limit_is_413_as_on_predict() -> None:
    settings = Settings(model_dir=MODEL_DIR, access_log="off", grpc_port=0, max_batch=2)
    with TestClient(create_app(settings)) as small:
        response = small.post("/models/mlp/explain", json={"instances": [FIRST] * 3})
        assert response.status_code == 413 and response.json()["limit"] == 2


def test_explain_is_counted_under_its_own_route_label(client: TestClient) -> None:
    series = 'serve_requests_total{route="/models/{model}/explain",model="mlp",version="1",status="200"}'
    rows = 'serve_rows_predicted_total{model="mlp",version="1"}'

    def value(name: str) -> float:
        match = re.search(re.escape(name) + r" (\S+)", client.get("/metrics").text)
        return float(match.group(1)) if match else 0.0

    before, rows_before = value(series), value(rows)
    explain(client, "mlp", {"instances": [FIRST] * 4})
    assert value(series) - before == 1 and value(rows) - rows_before == 4


def test_the_real_server_explains_as_the_in_process_app(server: Server, client: TestClient) -> None:
    response = httpx.post(server.url + "/models/mlp/explain", json=FIRST)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == explain(client, "mlp", FIRST)


# A version exported before explanations.

@pytest.fixture(scope="module")
def older(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """mlp version 1 from an export without explanation outputs; linear as committed."""
    store = tmp_path_factory.mktemp("older") / "store"
    shutil.copytree(MODEL_DIR, store)
    put(store, "mlp", 1, without_explanations("mlp"))
    with TestClient(create_app(Settings(model_dir=store, access_log="off", grpc_port=0))) as test_client:
        yield test_client


def test_explaining_a_version_without_explanation_outputs_is_a_409_that_says_so(older: TestClient) -> None:
    for path in ("/models/mlp/explain", "/models/mlp/versions/1/explain"):
        response = older.post(path, json=FIRST)
        assert response.status_code == 409
        assert response.json() == {
            "error": "model 'mlp' version 1 has no explanation outputs (MEDV_lower, MEDV_upper, contributions): "
                     "its file was exported before them; it still predicts", "model": "mlp", "version": "1"}
    assert older.post("/models/mlp/predict", json=FIRST).status_code == 200
    assert older.post("/models/linear/explain", json=FIRST).status_code == 200


def test_a_version_without_explanation_outputs_lists_and_answers_only_medv_on_v2(older: TestClient) -> None:
    assert [o["name"] for o in older.get("/v2/models/mlp").json()["outputs"]] == ["MEDV"]
    request = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 13], "data": list(FIRST.values())}]}
    asked = older.post("/v2/models/mlp/infer", json={**request, "outputs": [{"name": "contributions"}]})
    assert asked.status_code == 400
    assert asked.json()["error"] == "unknown output(s) contributions; the model has 'MEDV'"
    assert [o["name"] for o in older.post("/v2/models/mlp/infer", json=request).json()["outputs"]] == ["MEDV"]


def test_a_version_without_explanation_outputs_has_a_page_that_predicts(older: TestClient) -> None:
    page = older.get("/").text
    assert 'data-url="/models/mlp/predict"' in page and 'data-url="/models/linear/explain"' in page
    assert "no explanation outputs" in page
    assert "interval" not in older.get("/models/mlp").json()


# The golden explanation outputs are checked at load, as the golden predictions are.

def test_a_file_whose_explanations_differ_from_its_golden_ones_is_refused(tmp_path: Path) -> None:
    model = onnx.load(MODEL_DIR / "linear" / "1" / "model.onnx")
    meta = {p.key: p.value for p in model.metadata_props}
    golden = json.loads(meta["golden"])
    golden["extra_outputs"]["contributions"][0][5] += 0.5
    del model.metadata_props[:]
    helper.set_model_props(model, {**meta, "golden": json.dumps(golden)})
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelLoadError, match="does not reproduce its golden predictions: row 0, feature RM of "
                                             "contributions gives"):
        Model.load(path)


def test_a_long_explanation_does_not_hold_up_other_requests(server: Server) -> None:
    """The MLP's exact Shapley values cost milliseconds a row: they run beside the event loop, not on it."""
    records = [{name: row[name] for name in FEATURES} for row in ROWS[:500]] * 3
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        long = pool.submit(httpx.post, server.url + "/models/mlp/explain", json={"instances": records}, timeout=120)
        time.sleep(0.3)
        quick = []
        while not long.done():
            begin = time.monotonic()
            assert httpx.post(server.url + "/models/mlp/predict", json=FIRST, timeout=30).status_code == 200
            quick.append(time.monotonic() - begin)
        assert long.result().status_code == 200 and len(long.result().json()["explanations"]) == 1500
    assert quick and time.monotonic() - started > 1, "the explanation took too little time to show anything"
    assert max(quick) < 0.5, f"a prediction waited {max(quick):.2f} s behind the explanation"
