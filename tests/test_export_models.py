"""The exported ONNX graphs: the workshop's figures, parity, batches, metadata contract, reproducibility.

One fresh export per session (in a temporary directory) is compared with the committed `onnx_models/`,
which proves both that the export is deterministic and that the committed models are current.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export import build, data, linear, parity, reproducible, run, runtime, schema
from export.build import Exported
from export.errors import ExportError
from export.metrics import score

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "housing.csv"
COMMITTED = REPO / "onnx_models"
NAMES = ("linear", "mlp")
DATASET = data.load(DATA)
# The notebook's hand-typed "raw_data" row that its GLM, fed unscaled, predicted as -260.42.
NOTEBOOK_RAW_ROW = {"CRIM": 0.00532, "ZN": 6, "INDUS": 1.51, "CHAS": 0.0, "NOX": 0.52, "RM": 4.53, "AGE": 40.2,
                    "DIS": 3.02, "RAD": 2, "TAX": 296.0, "PTRATIO": 0.11292, "B": 397, "LSTAT": 4.98}


def committed_file(name: str) -> Path:
    """The current (newest) committed version of a model."""
    newest = max(int(p.name) for p in (COMMITTED / name).iterdir())
    return COMMITTED / name / str(newest) / run.MODEL_FILE


@pytest.fixture(scope="session")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    """A fresh export as the version number the committed files have."""
    out = tmp_path_factory.mktemp("onnx_models")
    (version,) = {int(committed_file(name).parent.name) for name in NAMES}
    return {model.name: model for model in run.export(DATASET, out, version)}


def committed(name: str) -> ort.InferenceSession:
    return runtime.session(onnx.load(committed_file(name)))


def metadata(name: str) -> dict[str, str]:
    return dict(committed(name).get_modelmeta().custom_metadata_map)


def test_linear_graph_fed_the_full_raw_first_row_predicts_the_notebooks_29_9197() -> None:
    first_row = DATASET.features[:1]
    assert runtime.predict(committed("linear"), first_row)[0] == pytest.approx(29.919737211857687, abs=1e-4)


def test_linear_graph_has_the_notebooks_in_sample_rmse_5_1649() -> None:
    predicted = runtime.predict(committed("linear"), DATASET.features)
    assert score(DATASET.target, predicted).rmse == pytest.approx(5.164851246622656, abs=1e-4)


def test_raw_values_are_standardized_inside_so_the_notebooks_minus_260_cannot_happen() -> None:
    row = np.array([[NOTEBOOK_RAW_ROW[name] for name in schema.FEATURE_NAMES]])
    # 21.9913 is what the notebook got once it standardized the row by hand.
    assert runtime.predict(committed("linear"), row)[0] == pytest.approx(21.991264610651193, abs=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_graph_takes_features_batch_by_13_and_returns_medv_then_its_explanations(name: str) -> None:
    session = committed(name)
    (graph_input,), outputs = session.get_inputs(), session.get_outputs()
    assert (graph_input.name, graph_input.type, graph_input.shape[1]) == ("features", "tensor(float)", 13)
    assert [(o.name, o.type, o.shape[1]) for o in outputs] == [
        ("MEDV", "tensor(float)", 1), ("MEDV_lower", "tensor(float)", 1), ("MEDV_upper", "tensor(float)", 1),
        ("contributions", "tensor(float)", 13)]
    assert isinstance(graph_input.shape[0], str) and {o.shape[0] for o in outputs} == {graph_input.shape[0]}
    (gate,) = session.get_overridable_initializers()
    assert (gate.name, gate.type, gate.shape) == ("explain", "tensor(bool)", [])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 7, 506])
def test_any_batch_size_gives_the_same_rows_as_the_full_batch(name: str, batch: int) -> None:
    session = committed(name)
    rows = DATASET.features[:batch].astype(np.float32)
    (output,) = session.run(["MEDV"], {"features": rows})
    assert output.shape == (batch, 1) and output.dtype == np.float32
    np.testing.assert_allclose(output.ravel(), runtime.predict(session, DATASET.features)[:batch], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_files_are_single_small_self_contained_checked_onnx_graphs(name: str) -> None:
    onnx.checker.check_model(str(committed_file(name)), full_check=True)
    model = onnx.load(committed_file(name), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert committed_file(name).stat().st_size < 100_000


def test_the_committed_store_holds_one_version_of_each_model_with_its_card_and_plot() -> None:
    assert sorted(p.name for p in COMMITTED.iterdir()) == list(NAMES)
    for name in NAMES:
        (version,) = (COMMITTED / name).iterdir()
        assert sorted(p.name for p in version.iterdir()) == ["model.md", "model.onnx", "model.png"]


def test_linear_graph_is_one_gemm_on_the_raw_features_beside_the_gated_explanations() -> None:
    model = onnx.load(committed_file("linear"))
    assert [node.op_type for node in model.graph.node] == ["Gemm", "If"]
    weights = onnx.numpy_helper.to_array(model.graph.initializer[0]).ravel()
    unused = [i for i, name in enumerate(schema.FEATURE_NAMES) if name not in schema.LINEAR_FEATURES]
    assert np.all(weights[unused] == 0) and np.all(weights[[*set(range(13)) - set(unused)]] != 0)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_graph_matches_the_native_model_on_training_and_random_rows(fresh: dict[str, Exported], name: str) -> None:
    model = fresh[name]
    for rows in (DATASET.features, parity.random_rows(DATASET.features)):
        rows32 = rows.astype(np.float32).astype(np.float64)
        difference = np.abs(runtime.predict(model.model, rows32) - model.native(rows32))
        assert difference.max() <= 1e-3
    assert max(model.parity.training_rows, model.parity.random_rows) <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_explanation_output_matches_its_native_computation(fresh: dict[str, Exported], name: str) -> None:
    model = fresh[name]
    rows = np.vstack([DATASET.features, parity.random_rows(DATASET.features)]).astype(np.float32).astype(np.float64)
    if name == "mlp":  # torch takes ~30 ms a row for the 8,192 network evaluations of exact Shapley values
        rows = rows[np.linspace(0, len(rows) - 1, 200).astype(int)]
    wanted = model.native_explain(rows).outputs()
    for output, value in runtime.explain(model.model, rows).items():
        assert np.abs(value - wanted[output]).max() <= 1e-3, output
    assert set(model.parity.explanations) == set(schema.EXPLANATION_NAMES)
    assert max(model.parity.explanations.values()) <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_a_fresh_export_predicts_what_the_committed_model_predicts(fresh: dict[str, Exported], name: str) -> None:
    assert_predicts_like_the_committed_model(name, fresh[name].model)
    ours, theirs = fresh[name].metadata, metadata(name)
    # What may differ: where it was exported, and the last digits of figures computed by onnxruntime's and
    # the linear algebra libraries' CPU-specific kernels (metrics, golden outputs, OLS statistics); the
    # weights themselves are the same bits.
    assert set(ours) == set(theirs)
    for key in sorted(set(ours) - {"training_environment"}):
        assert_same_up_to_last_digits(key, _parsed(ours[key]), _parsed(theirs[key]))


def _parsed(value: str) -> object:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def assert_same_up_to_last_digits(where: str, ours: object, theirs: object) -> None:
    """Equal structures and strings; numbers within a relative 1e-5 (float32 computations on other kernels)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        assert ours.keys() == theirs.keys(), where
        for key in ours:
            assert_same_up_to_last_digits(f"{where}.{key}", ours[key], theirs[key])
    elif isinstance(ours, list) and isinstance(theirs, list):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same_up_to_last_digits(f"{where}[{i}]", a, b)
    elif isinstance(ours, float) or isinstance(theirs, float):
        assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-6), where
    else:
        assert ours == theirs, where


# Environments that make MKL, ATen, oneDNN and numpy take the kernels of other CPUs (as far as this one
# has them), and a user's own MKL_CBWR: the export must override or be immune to all of them.
EMULATED_CPUS = {
    "avx512": {"MKL_ENABLE_INSTRUCTIONS": "AVX512", "ATEN_CPU_CAPABILITY": "avx512",
               "DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX", "MKL_CBWR": "AUTO"},
    "avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2",
             "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"},
    "sse4_2": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "default", "DNNL_MAX_CPU_ISA": "SSE41",
               "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"},
}


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`python -m export` once per emulated CPU, all at once (~20 s on two cores)."""
    out = tmp_path_factory.mktemp("emulated")
    runs = {
        cpu: subprocess.Popen([sys.executable, "-m", "export", "--out", str(out / cpu)], cwd=REPO,
                              env={**os.environ, **settings}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for cpu, settings in EMULATED_CPUS.items()
    }
    for cpu, process in runs.items():
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, f"export emulating {cpu} failed:\n{output.decode()[-2000:]}"
    return {cpu: out / cpu for cpu in runs}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("cpu", EMULATED_CPUS)
def test_an_export_emulating_another_cpu_predicts_what_the_committed_model_predicts(
        emulated: dict[str, Path], cpu: str, name: str) -> None:
    model = onnx.load(emulated[cpu] / name / "1" / run.MODEL_FILE)
    assert_predicts_like_the_committed_model(name, model)
    environment = json.loads({p.key: p.value for p in model.metadata_props}["training_environment"])
    assert environment["pinned"] == reproducible.PINNED
    assert (environment["torch_cpu_capability"], environment["threads"]) == ("DEFAULT", 1)


# A short training under qemu-user presenting another vendor's CPU (no AVX-512: TCG has none), against
# the same training here. Environment caps cannot reach paths that a library picks by CPUID alone (MKL's
# vector math did, through torch's sqrt in Adam); an emulated CPU does. ~1-2 min, mostly torch's import.
TRAINING_FINGERPRINT = """
import hashlib, pathlib, sys
from export import data, mlp
dataset = data.load(pathlib.Path("data/housing.csv"))
module = mlp.train(mlp.CHOSEN, dataset.features, dataset.target, epochs=int(sys.argv[1])).module
print(hashlib.sha256(b"".join(v.numpy().tobytes() for v in module.state_dict().values())).hexdigest())
"""
OTHER_VENDOR = {"GenuineIntel": "EPYC-Rome-v1", "AuthenticAMD": "Haswell-v1"}


@pytest.mark.slow
def test_training_on_an_emulated_cpu_of_the_other_vendor_gives_the_same_weights() -> None:
    vendor = next(line.split(":")[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("vendor_id"))
    command = [sys.executable, "-c", TRAINING_FINGERPRINT, "5"]
    here, emulated = (
        subprocess.Popen(prefix + command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for prefix in ([], ["qemu-x86_64", "-cpu", OTHER_VENDOR[vendor]]))
    (ours, _), (theirs, errors) = here.communicate(timeout=600), emulated.communicate(timeout=600)
    assert emulated.returncode == 0, errors[-2000:]
    assert ours and theirs == ours, f"5 epochs on this {vendor} CPU and on an emulated {OTHER_VENDOR[vendor]} differ"


def assert_predicts_like_the_committed_model(name: str, model: onnx.ModelProto) -> None:
    """Equal within 1e-6 on the training rows and 10,000 random rows; else say by how much, and what
    differs between the machine that exported the committed model and this export's."""
    rows = np.vstack([DATASET.features, parity.random_rows(DATASET.features)])
    difference = np.abs(runtime.predict(model, rows) - runtime.predict(committed(name), rows))
    if difference.max() <= 1e-6:
        return
    ours = json.loads({p.key: p.value for p in model.metadata_props}["training_environment"])
    theirs = json.loads(metadata(name)["training_environment"])
    differs = {key: {"committed": theirs.get(key), "this export": ours.get(key)}
               for key in sorted({*ours, *theirs}) if ours.get(key) != theirs.get(key)}
    pytest.fail(f"{name}: {np.count_nonzero(difference > 1e-6):,} of {len(rows):,} rows differ from the committed "
                f"model, by up to {difference.max():.3g} {schema.TARGET.unit} (tolerance 1e-6). The machines "
                f"differ in: {json.dumps(differs)}")


@pytest.mark.slow
def test_mlp_cross_validated_rmse_meets_the_bar(fresh: dict[str, Exported]) -> None:
    assert fresh["mlp"].cv.rmse <= 3.6


def test_export_refuses_to_write_anything_when_parity_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(parity, "TOLERANCE", 0.0)
    with pytest.raises(ExportError, match="differs from the native model"):
        run.export(DATASET, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_writes_the_next_version_of_each_model_and_never_overwrites_one(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked: list[dict[str, int]] = []
    monkeypatch.setattr(build, "both", lambda dataset, versions: asked.append(versions) or [])
    (tmp_path / "linear" / "3").mkdir(parents=True)
    (tmp_path / "mlp" / "1").mkdir(parents=True)
    run.export(DATASET, tmp_path)
    run.export(DATASET, tmp_path, version=7)
    assert asked == [{"linear": 4, "mlp": 2}, {"linear": 7, "mlp": 7}]
    with pytest.raises(ExportError, match="linear/3 exists: a version is never overwritten"):
        run.export(DATASET, tmp_path, version=3)


@pytest.mark.parametrize("name", NAMES)
def test_golden_predictions_in_the_metadata_are_what_the_graph_predicts(name: str) -> None:
    golden = json.loads(metadata(name)["golden"])
    inputs = np.array(golden["inputs"])
    assert inputs.shape == (parity.GOLDEN_ROWS, 13) and golden["tolerance"] == parity.GOLDEN_TOLERANCE
    np.testing.assert_allclose(runtime.predict(committed(name), inputs), golden["outputs"], rtol=0, atol=1e-5)


def test_folded_linear_graph_matches_skl2onnx_graph() -> None:
    converted = linear.convert(linear.fit(DATASET.features, DATASET.target))
    rows = parity.random_rows(DATASET.features)
    np.testing.assert_allclose(runtime.predict(linear.fold(converted), rows), runtime.predict(converted, rows),
                               rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_metadata_carries_every_contract_key_readable_by_onnxruntime_and_onnx(name: str) -> None:
    meta = metadata(name)
    assert set(meta) == {
        "model_name", "model_version", "description", "input_name", "output_name", "feature_names",
        "features_used", "features", "target", "metrics", "data_sha256", "training_environment", "hyperparameters",
        "golden", "drift_reference", "explain_input", "interval", "baseline",
        *(["coefficients"] if name == "linear" else []),
    }
    proto = onnx.load(committed_file(name))
    assert {p.key: p.value for p in proto.metadata_props} == meta
    assert (proto.model_version, proto.doc_string, proto.producer_name) == (
        1, meta["description"], "housing-serving export")
    assert (meta["model_name"], meta["model_version"], meta["input_name"], meta["output_name"]) == (
        name, "1", "features", "MEDV")
    assert json.loads(meta["feature_names"]) == list(schema.FEATURE_NAMES)
    used = schema.LINEAR_FEATURES if name == "linear" else schema.FEATURE_NAMES
    assert json.loads(meta["features_used"]) == list(used)
    assert meta["data_sha256"] == hashlib.sha256(DATA.read_bytes()).hexdigest()
    assert json.loads(meta["target"]) == {"name": "MEDV", "description": schema.TARGET.description, "unit": "USD 1000s"}
    environment = json.loads(meta["training_environment"])
    assert environment["pinned"] == reproducible.PINNED and environment["cpu"] and environment["instruction_sets"]
    libraries = set(environment["libraries"])
    assert {"python", "numpy", "scikit-learn", "torch", "onnx", "skl2onnx", "onnxruntime"} <= libraries
    assert "\n" not in meta["description"]
    reference = {f["name"]: f for f in json.loads(meta["drift_reference"])}
    assert list(reference) == list(schema.FEATURE_NAMES)
    assert reference["CHAS"]["edges"] == [0.0, 1.0] and len(reference["RM"]["edges"]) == 11  # ties collapse deciles
    for feature in reference.values():  # below the minimum, the bins, exactly the maximum, above it
        assert len(feature["shares"]) == len(feature["edges"]) + 2 and sum(feature["shares"]) == pytest.approx(1)
        assert feature["shares"][0] == feature["shares"][-1] == 0


@pytest.mark.parametrize("name", NAMES)
def test_feature_metadata_has_schema_names_and_training_statistics(name: str) -> None:
    features = json.loads(metadata(name)["features"])
    x = DATASET.features
    expected = [
        {"name": c.name, "description": c.description, "unit": c.unit, "min": lo, "max": hi, "mean": m, "std": s}
        for c, lo, hi, m, s in zip(schema.FEATURES, x.min(0), x.max(0), x.mean(0), x.std(0))
    ]
    # pytest.approx compares no nested lists: the aliases are checked apart.
    assert [f.pop("aliases") for f in features] == [list(c.aliases) for c in schema.FEATURES]
    assert len(features) == len(expected)
    for feature, wanted in zip(features, expected):
        assert feature == pytest.approx(wanted)


def test_b_is_also_published_as_black_and_no_spelling_names_two_features() -> None:
    assert next(c for c in schema.FEATURES if c.name == "B").aliases == ("black",)
    spellings = [s.lower() for c in schema.FEATURES for s in (c.name, *c.aliases)]
    assert len(spellings) == len(set(spellings))


@pytest.mark.parametrize("name", NAMES)
def test_metric_metadata_matches_the_graphs_own_predictions(name: str) -> None:
    metrics = json.loads(metadata(name)["metrics"])
    in_sample = score(DATASET.target, runtime.predict(committed(name), DATASET.features))
    assert metrics["in_sample"] == pytest.approx(in_sample.as_dict())
    assert set(metrics["cv"]) == {"rmse", "mae", "r2", "folds"} and metrics["cv"]["folds"] == 5


def test_hyperparameter_metadata_describes_each_training() -> None:
    assert json.loads(metadata("linear")["hyperparameters"])["formula"] == (
        "MEDV ~ CRIM + INDUS + CHAS + RM + AGE + DIS + TAX + LSTAT")
    mlp = json.loads(metadata("mlp")["hyperparameters"])
    assert {"hidden", "optimizer", "lr", "weight_decay", "max_epochs", "patience", "final_epochs", "seed"} <= set(mlp)


@pytest.mark.parametrize("name", NAMES)
def test_model_card_and_plot_are_written_next_to_the_model(name: str) -> None:
    card = (committed_file(name).parent / "model.md").read_text()
    for section in ("## Metrics", "## Intended use", "## Caveats", "Feature `B`", "B (also `black`)", "training ranges",
                    "(model.png)", f"`{name}/1/model.onnx`"):
        assert section in card
    assert (committed_file(name).parent / "model.png").read_bytes().startswith(b"\x89PNG")
