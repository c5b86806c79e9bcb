"""Drift: out-of-range counts per feature and the PSI of the recent window, over every route and protocol,
exact with several workers; a model exported before drift references still serves, without PSI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from starlette.testclient import TestClient

from serve.app import create_app
from serve.drift import Drift
from serve.model import Model
from serve.settings import Settings
from tests.conftest import FEATURES, ROWS, Server, model_file, running_server
from tests.test_server import start_and_fail

X = np.array([[row[k] for k in FEATURES] for row in ROWS], dtype=np.float32)
RM = FEATURES.index("RM")
WINDOW = 2000


def training_sample(seed: int = 0, n: int = WINDOW) -> np.ndarray:
    return X[np.random.default_rng(seed).integers(0, len(X), n)]


def shifted(rows: np.ndarray, column: int, by: float) -> np.ndarray:
    moved = rows.copy()
    moved[:, column] += by
    return moved


def send(server: Server, rows: np.ndarray, model: str = "linear") -> None:
    """Some rows as single records, the rest in batches; a connection each, so that every worker takes a share."""
    url = f"{server.url}/models/{model}/predict"
    for row in rows[:40]:
        assert httpx.post(url, json=row.tolist()).status_code == 200
    for start in range(40, len(rows), 180):
        assert httpx.post(url, json={"instances": rows[start:start + 180].tolist()}).status_code == 200


def drift(server: Server, model: str = "linear") -> dict[str, Any]:
    response = httpx.get(f"{server.url}/models/{model}/drift")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def psi(document: dict[str, Any]) -> dict[str, float]:
    return {f["name"]: f["psi"] for f in document["features"]}


def bin_counts(edges: list[float], values: np.ndarray) -> list[int]:
    """The layout of the metadata's bins, computed here on its own: below the minimum, [e_i, e_i+1) each,
    exactly the maximum, above the maximum."""
    e = np.array(edges, dtype=np.float32)
    bins = np.searchsorted(e, values, side="right")
    bins[values > e[-1]] = len(e) + 1
    counts: list[int] = np.bincount(bins, minlength=len(e) + 2).tolist()
    return counts


def series(metrics: str, name: str, **labels: str) -> float:
    text = ",".join(f'{key}="{value}"' for key, value in labels.items())
    found = re.findall(rf"^{name}{{{re.escape(text)}}} (\S+)$", metrics, re.MULTILINE)
    assert len(found) == 1, f"{name}{{{text}}} in\n{metrics}"
    return float(found[0])


@pytest.mark.parametrize("workers", ["1", "2"])
def test_rows_drawn_from_the_training_data_keep_every_psi_below_0_1(tmp_path: Path, workers: str) -> None:
    with running_server(tmp_path, "--workers", workers, "--drift-window", str(WINDOW)) as server:
        send(server, training_sample())
        document = drift(server)
    assert document["reference"] is True and document["window"]["rows"] == WINDOW
    assert all(value < 0.1 for value in psi(document).values()), psi(document)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_rm_shifted_by_2_pushes_its_psi_above_0_25_and_leaves_the_others_below_0_1(tmp_path: Path,
                                                                                 workers: str) -> None:
    rows = training_sample()
    with running_server(tmp_path, "--workers", workers, "--drift-window", str(WINDOW)) as server:
        send(server, rows)
        send(server, shifted(rows, RM, 2.0))
        document = drift(server)
    figures = psi(document)
    assert figures.pop("RM") > 0.25
    assert all(value < 0.1 for value in figures.values()), figures


def test_the_window_is_the_newest_rows_over_both_workers_exactly(tmp_path: Path) -> None:
    old, new = training_sample(1), shifted(training_sample(2), RM, 1.0)
    with running_server(tmp_path, "--workers", "2", "--drift-window", str(WINDOW)) as server:
        send(server, old)
        send(server, new)
        documents = [drift(server) for _ in range(10)]  # a connection each: both workers answer
    assert all(d == documents[0] for d in documents)
    document = documents[0]
    assert document["rows_seen"] == 2 * WINDOW
    assert document["window"]["size"] == document["window"]["rows"] == WINDOW
    for j, feature in enumerate(document["features"]):
        assert feature["recent_share"] == pytest.approx(np.array(bin_counts(feature["edges"], new[:, j])) / WINDOW,
                                                   abs=1e-12), feature["name"]


def test_metrics_and_drift_give_the_same_totals_whatever_worker_answers(tmp_path: Path) -> None:
    rows = shifted(training_sample(3, 500), RM, 2.0)
    expected_outside = int((rows[:, RM] > X[:, RM].max()).sum())
    with running_server(tmp_path, "--workers", "2", "--drift-window", str(WINDOW)) as server:
        send(server, rows)
        scrapes = {httpx.get(server.url + "/metrics").text for _ in range(10)}
        documents = [drift(server) for _ in range(10)]
    labels = {"model": "linear", "version": "1"}
    for metrics in scrapes:
        assert series(metrics, "serve_out_of_range_total", **labels, feature="RM") == expected_outside
        assert series(metrics, "serve_out_of_range_total", **labels, feature="CRIM") == 0
        assert series(metrics, "serve_drift_window_rows", **labels) == 500
        assert series(metrics, "serve_drift_window_rows", model="mlp", version="1") == 0
        assert series(metrics, "serve_feature_psi", **labels, feature="RM") == pytest.approx(psi(documents[0])["RM"])
    assert all(d == documents[0] for d in documents)
    assert documents[0]["rows_seen"] == 500 and documents[0]["features"][RM]["out_of_range"] == expected_outside


def test_values_outside_the_range_are_counted_per_feature_over_every_protocol(tmp_path: Path) -> None:
    def outside(feature: str, value: float, rows: int = 1) -> np.ndarray:
        x = np.repeat(X[:1], rows, axis=0)
        x[:, FEATURES.index(feature)] = value
        return x

    with running_server(tmp_path) as server:
        url = server.url + "/models/linear"
        assert httpx.post(url + "/predict", json=outside("RM", 100).tolist()[0]).status_code == 200
        assert httpx.post(url + "/predict", json={"instances": outside("ZN", 1000, 3).tolist()}).status_code == 200
        http = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
        for feature, value, binary in (("CRIM", -1, False), ("TAX", 1e4, True)):
            tensor = triton_http.InferInput("features", [1, len(FEATURES)], "FP32")
            tensor.set_data_from_numpy(outside(feature, value), binary_data=binary)
            http.infer("linear", [tensor])
        tensor = triton_grpc.InferInput("features", [2, len(FEATURES)], "FP32")
        tensor.set_data_from_numpy(outside("LSTAT", -5, 2))
        triton_grpc.InferenceServerClient(server.grpc_address).infer("linear", [tensor])
        metrics = httpx.get(server.url + "/metrics").text
        document = drift(server)
    expected = {"RM": 1, "ZN": 3, "CRIM": 1, "TAX": 1, "LSTAT": 2}
    for name in FEATURES:
        assert series(metrics, "serve_out_of_range_total", model="linear", version="1",
                      feature=name) == expected.get(name, 0)
    assert {f["name"]: f["out_of_range"] for f in document["features"]} == {n: expected.get(n, 0) for n in FEATURES}
    assert document["rows_seen"] == document["window"]["rows"] == 8


def test_the_training_rows_fall_in_the_bins_export_wrote_so_their_psi_is_0() -> None:
    model = Model.load(model_file("mlp"))
    reference = model.drift_reference
    assert reference.shares is not None
    counter = Drift(model.name, model.version, reference, len(X), "", model.range)
    counter.count(X)
    summary = counter.summary()
    for counts, expected in zip(summary.counts, reference.shares):
        assert (counts / len(X)).tolist() == pytest.approx(expected, abs=1e-12)
    assert summary.psi(reference.shares) == [0.0] * len(FEATURES)


def test_a_row_is_binned_alike_alone_in_a_small_batch_and_in_a_large_one() -> None:
    model = Model.load(model_file("mlp"))
    edges = model.drift_reference.edges
    # Every edge, just below and above it, and values far outside the range.
    values = [np.array([v for e in column for v in (np.nextafter(np.float32(e), -np.inf), e,
                                                    np.nextafter(np.float32(e), np.inf))] + [-1e6, 1e6])
              for column in edges]
    rows = np.stack([np.resize(v, 300) for v in values], axis=1).astype(np.float32)
    one, small, large = (Drift(model.name, model.version, model.drift_reference, 1000, "", model.range)
                          for _ in range(3))
    for row in rows:
        one.count(row[None])
    for start in range(0, 300, 100):
        small.count(rows[start:start + 100])
    large.count(rows)
    summaries = [counter.summary() for counter in (one, small, large)]
    assert summaries[0].out_of_range == summaries[1].out_of_range == summaries[2].out_of_range
    for j, column in enumerate(edges):
        for summary in summaries:
            assert summary.counts[j].tolist() == bin_counts(list(column), rows[:, j])


def test_out_of_range_counts_stay_exact_as_the_ring_wraps_and_batches_overwrite_it() -> None:
    model = Model.load(model_file("linear"))
    rows = np.random.default_rng(4).uniform(-10, 800, (3010, len(FEATURES))).astype(np.float32)
    counter = Drift(model.name, model.version, model.drift_reference, 100, "", model.range)
    for row in rows[:333]:  # single records, counted a block at a time
        counter.count(row[None])
    # A batch longer than the window (and than a block of the range check), over single records not counted yet.
    counter.count(rows[333:2750])
    for row in rows[2750:2950]:
        counter.count(row[None])
    counter.count(rows[2950:])  # 60 rows from slot 50: the last 10 wrap around to the ring's start
    summary = counter.summary()
    assert summary.out_of_range == ((rows < model.lower) | (rows > model.upper)).sum(axis=0).tolist()
    assert summary.rows_seen == 3010 and summary.window_rows == 100
    for j, column in enumerate(model.drift_reference.edges):  # the window holds exactly the newest 100 rows
        assert summary.counts[j].tolist() == bin_counts(list(column), rows[-100:, j])


def without_drift_reference(source: Path, target: Path) -> None:
    model = onnx.load(str(source))
    kept = [p for p in model.metadata_props if p.key != "drift_reference"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    target.parent.mkdir(parents=True)
    onnx.save(model, str(target))


def test_a_model_exported_before_drift_references_serves_and_drift_says_it_has_no_psi(tmp_path: Path) -> None:
    without_drift_reference(model_file("linear"), tmp_path / "linear" / "1" / "model.onnx")
    settings = Settings(model_dir=tmp_path, access_log="off", grpc_port=0)
    with TestClient(create_app(settings)) as client:
        row = X[0].tolist()
        row[RM] = 100
        assert client.post("/models/linear/predict", json=row).status_code == 200
        document = client.get("/models/linear/versions/1/drift").json()
        metrics = client.get("/metrics").text
    assert document["reference"] is False and "no drift_reference" in document["reason"]
    assert {f["psi"] for f in document["features"]} == {None}
    assert document["features"][RM]["out_of_range"] == 1 and document["window"]["rows"] == 1
    assert series(metrics, "serve_out_of_range_total", model="linear", version="1", feature="RM") == 1
    assert "serve_feature_psi{" not in metrics


def test_a_drift_reference_that_disagrees_with_the_training_range_fails_startup(tmp_path: Path) -> None:
    model = onnx.load(str(model_file("linear")))
    entry = next(p for p in model.metadata_props if p.key == "drift_reference")
    entry.value = entry.value.replace('"edges":[0.00632,', '"edges":[0.5,', 1)
    target = tmp_path / "linear" / "1" / "model.onnx"
    target.parent.mkdir(parents=True)
    onnx.save(model, str(target))
    result = start_and_fail("--model-dir", str(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "the edges of CRIM must rise strictly from its training minimum 0.00632" in result.stderr


def test_drift_of_an_unknown_model_is_404_naming_the_models(client: TestClient) -> None:
    response = client.get("/models/price/drift")
    assert response.status_code == 404 and "linear" in response.json()["error"]


def test_drift_routes_are_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/models/{model}/drift", "/models/{model}/versions/{version}/drift"} <= paths.keys()
