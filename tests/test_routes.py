"""The read-only routes: health, model listing and metadata, model card plots, OpenAPI, metrics, landing page."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
from jsonschema import Draft4Validator
from openapi_spec_validator import validate
from starlette.testclient import TestClient

from serve.app import create_app
from serve.settings import Settings
from tests.conftest import FEATURES, FIRST, MODEL_DIR
from tests.versions import store_copy


def test_liveness_and_readiness_answer_200_once_started(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "live"}
    assert client.get("/health/ready").json() == {"status": "ready"}


def test_models_lists_names_versions_and_routes(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert models["linear"]["version"] == "1" and models["linear"]["predict"] == "/models/linear/predict"


@pytest.mark.parametrize("model, used", [("linear", 8), ("mlp", 13)])
def test_model_metadata_comes_from_the_onnx_file(client: TestClient, model: str, used: int) -> None:
    meta = client.get(f"/models/{model}").json()
    assert [f["name"] for f in meta["features"]] == FEATURES
    assert sum(f["used_by_model"] for f in meta["features"]) == used
    ptratio = next(f for f in meta["features"] if f["name"] == "PTRATIO")
    assert (ptratio["min"], ptratio["max"]) == (12.6, 22.0) and ptratio["description"] and ptratio["unit"]
    assert meta["input"] == {"name": "features", "datatype": "FP32", "shape": [-1, 13]}
    assert meta["output"]["name"] == "MEDV" and meta["output"]["unit"]
    assert all({"rmse", "mae", "r2"} <= set(meta["metrics"][kind]) for kind in ("cv", "in_sample"))
    assert len(meta["training_data_sha256"]) == 64


def test_model_metadata_lists_each_features_aliases(client: TestClient) -> None:
    aliases = {f["name"]: f["aliases"] for f in client.get("/models/linear").json()["features"]}
    assert aliases == {name: ["black"] if name == "B" else [] for name in FEATURES}


def test_metadata_of_an_unknown_model_is_404(client: TestClient) -> None:
    assert client.get("/models/nope").status_code == 404


def test_openapi_is_valid_and_names_each_models_features(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    validate(spec)
    for model in ("linear", "mlp"):
        record = spec["components"]["schemas"][f"{model}_record"]
        assert set(record["properties"]) == {*FEATURES, "black"}
        assert record["additionalProperties"] is False
        assert f"/models/{model}/predict" in spec["paths"]


def test_the_record_schema_takes_each_feature_once_by_name_or_alias(client: TestClient) -> None:
    record = client.get("/openapi.json").json()["components"]["schemas"]["linear_record"]
    assert record["required"] == [name for name in FEATURES if name != "B"]
    assert "also named black" in record["properties"]["B"]["description"]
    validator = Draft4Validator(record)  # OpenAPI 3.0's boolean exclusiveMinimum is draft 4's
    by_alias = {**{k: v for k, v in FIRST.items() if k != "B"}, "black": FIRST["B"]}
    assert validator.is_valid(FIRST) and validator.is_valid(by_alias)
    assert not validator.is_valid({**FIRST, "black": FIRST["B"]})
    assert not validator.is_valid({k: v for k, v in FIRST.items() if k != "B"})


def test_metrics_count_requests_by_route_model_and_status_and_rows(client: TestClient) -> None:
    def scrape() -> str:
        return client.get("/metrics").text

    def value(text: str, series: str) -> float:
        match = re.search(re.escape(series) + r" (\S+)", text)
        return float(match.group(1)) if match else 0.0

    ok = 'serve_requests_total{route="/models/{model}/predict",model="mlp",version="1",status="200"}'
    bad = 'serve_requests_total{route="/models/{model}/predict",model="mlp",version="1",status="422"}'
    rows = 'serve_rows_predicted_total{model="mlp",version="1"}'
    before = scrape()
    client.post("/models/mlp/predict", json={"instances": [FIRST] * 3})
    client.post("/models/mlp/predict", json={"CRIM": 1})
    after = scrape()
    assert value(after, ok) - value(before, ok) == 1
    assert value(after, bad) - value(before, bad) == 1
    assert value(after, rows) - value(before, rows) == 3
    labels = 'route="/models/{model}/predict",model="mlp",version="1"'
    assert f'serve_request_duration_seconds_bucket{{{labels},le="+Inf"}}' in after


def test_unknown_model_names_do_not_become_metric_labels(client: TestClient) -> None:
    client.post("/models/evil-label/predict", json=FIRST)
    assert "evil-label" not in client.get("/metrics").text


def test_the_landing_page_lists_models_features_metrics_and_a_form_each(client: TestClient) -> None:
    response = client.get("/")
    page = response.text
    assert response.headers["content-type"].startswith("text/html")
    assert page.count('<form class="try"') == 2 and "curl" in page
    assert all(f'name="{name}"' in page for name in FEATURES)
    assert "<td>B <small>also: black</small></td>" in page
    assert "RMSE" in page
    assert not re.search(r'(src|href)="https?://', page), "the page must not load external assets"


def test_the_linear_models_metadata_has_its_coefficient_table(client: TestClient) -> None:
    coefficients = client.get("/models/linear").json()["coefficients"]
    by_term = {row["term"]: row for row in coefficients}
    assert list(by_term) == ["Intercept", "CRIM", "INDUS", "CHAS", "RM", "AGE", "DIS", "TAX", "LSTAT"]
    for term, coefficient, std_error in (("Intercept", "22.5328", "0.231675"), ("CRIM", "-0.664513", "0.295568"),
                                         ("RM", "3.35801", "0.306851")):  # the workshop's GLM table, to its digits
        assert (f"{by_term[term]['coefficient']:.6g}", f"{by_term[term]['std_error']:.6g}") == (coefficient, std_error)
    columns = {"term", "coefficient", "std_error", "t", "p", "ci_lower", "ci_upper"}
    assert all(columns <= set(row) for row in coefficients)
    assert "coefficients" not in client.get("/models/mlp").json()


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_model_metadata_describes_the_interval_and_the_baseline(client: TestClient, model: str) -> None:
    meta = client.get(f"/models/{model}/versions/1").json()
    assert meta["interval"]["level"] == 0.9 and meta["interval"]["description"] and meta["interval"]["method"]
    assert isinstance(meta["baseline"]["value"], float) and meta["baseline"]["kind"]


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_each_versions_model_card_plot_is_served_as_png(client: TestClient, model: str) -> None:
    response = client.get(f"/models/{model}/versions/1/plot.png")
    assert response.headers["content-type"] == "image/png"
    assert response.content == (MODEL_DIR / model / "1" / "model.png").read_bytes()
    missing = client.get(f"/models/{model}/versions/9/plot.png")
    assert missing.status_code == 404 and "no ready version '9'" in missing.json()["error"]


def test_a_version_without_a_plot_still_has_a_page(tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(MODEL_DIR, store, ignore=shutil.ignore_patterns("*.png"))
    with TestClient(create_app(Settings(model_dir=store, access_log="off", grpc_port=0))) as bare:
        response = bare.get("/models/linear/versions/1/plot.png")
        assert response.status_code == 404 and response.json()["error"] == (
            "model 'linear' version 1 has no plot (model.png beside its model.onnx)")
        page = bare.get("/")
        assert page.status_code == 200 and "plot.png" not in page.text and page.text.count('<form class="try"') == 2


def test_openapi_documents_the_explain_routes_and_their_answers(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/models/linear/explain", "/models/mlp/versions/{version}/explain"):
        responses = spec["paths"][path]["post"]["responses"]
        assert {"200", "409", "422", "413"} <= set(responses)
        assert responses["200"]["content"]["application/json"]["schema"]["oneOf"] == [
            {"$ref": "#/components/schemas/Explanation"}, {"$ref": "#/components/schemas/Explanations"}]
    explanation = spec["components"]["schemas"]["Explanation"]
    assert {"prediction", "interval", "baseline", "contributions", "warnings"} <= set(explanation["required"])
    output = spec["components"]["schemas"]["InferenceRequest"]["properties"]["outputs"]["items"]["properties"]["name"]
    assert "MEDV_lower, MEDV_upper, contributions" in output["description"]


def test_the_landing_page_explains_with_an_interval_a_bar_chart_and_the_plot(client: TestClient) -> None:
    page = client.get("/").text
    assert 'data-url="/models/linear/explain"' in page and 'data-url="/models/mlp/explain"' in page
    assert '<img src="/models/mlp/versions/1/plot.png"' in page and "createElementNS(SVG" in page
    assert "<th>std. error</th>" in page and "<td>Intercept</td><td>22.5328</td>" in page



def test_metrics_report_readiness_as_health_ready_does(tmp_path: Path) -> None:
    store = store_copy(tmp_path)
    with TestClient(create_app(Settings(model_dir=store, grpc_port=0, watch=0.1))) as client:
        assert "\nserve_ready 1\n" in client.get("/metrics").text
        (store / "linear" / "1" / "model.onnx").unlink()  # its only version's file: meant to serve, and cannot
        deadline = time.monotonic() + 10
        while client.get("/health/ready").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/health/ready").status_code == 503
        assert "\nserve_ready 0\n" in client.get("/metrics").text
