"""The explanation outputs of the committed graphs: the linear interval against statsmodels, the notebook's
coefficient table, completeness of the contributions, Shapley values against shap, the gate, the golden
explanations, and the measured coverage."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import shap
import statsmodels.api as sm

from export import conformal, data, linear, mlp, parity, runtime, schema, shapley
from export.metrics import out_of_fold

REPO = Path(__file__).resolve().parent.parent
DATASET = data.load(REPO / "data" / "housing.csv")
NAMES = ("linear", "mlp")
# The training rows and the 10,000 random rows, as float32 sees them.
ROWS = np.vstack([DATASET.features, parity.random_rows(DATASET.features)]).astype(np.float32).astype(np.float64)
# Rows the MLP's Shapley values are checked on (~3 ms a row in onnxruntime): evenly spaced over ROWS.
SAMPLE = ROWS[np.linspace(0, len(ROWS) - 1, 40).astype(int)]
# The workshop notebook's printed GLM table (Julia's GLM.jl, features standardized by MLJ): the rows it shows.
NOTEBOOK_TABLE = """
(Intercept)  22.5328      0.231675   97.26    <1e-99  22.0776    22.988
CRIM         -0.664513    0.295568   -2.25    0.0250  -1.24523   -0.0837957
INDUS        -1.07263     0.429755   -2.50    0.0129  -1.91699   -0.228265
CHAS          0.928661    0.237252    3.91    0.0001   0.462522   1.3948
RM            3.35801     0.306851   10.94    <1e-24   2.75513    3.9609
AGE          -0.663807    0.389389   -1.70    0.0889  -1.42886    0.101243
"""


def committed_file(name: str) -> Path:
    (version,) = (REPO / "onnx_models" / name).iterdir()
    return version / "model.onnx"


def session(name: str) -> ort.InferenceSession:
    return runtime.session(onnx.load(committed_file(name)))


def metadata(name: str) -> dict[str, str]:
    return dict(session(name).get_modelmeta().custom_metadata_map)


def explained(name: str, rows: np.ndarray) -> dict[str, np.ndarray]:
    return runtime.explain(session(name), rows)


def test_linear_interval_is_statsmodels_obs_ci_on_training_and_random_rows() -> None:
    fit = sm.OLS(DATASET.target, sm.add_constant(DATASET.features[:, linear.COLUMNS])).fit()
    frame = fit.get_prediction(sm.add_constant(ROWS[:, linear.COLUMNS], has_constant="add")).summary_frame(alpha=0.1)
    outputs = explained("linear", ROWS)
    assert np.abs(outputs["MEDV_lower"].ravel() - frame["obs_ci_lower"].to_numpy()).max() <= 1e-3
    assert np.abs(outputs["MEDV_upper"].ravel() - frame["obs_ci_upper"].to_numpy()).max() <= 1e-3


def test_linear_coefficient_table_reproduces_the_notebooks_printed_digits() -> None:
    table = {row["term"]: row for row in json.loads(metadata("linear")["coefficients"])}
    assert list(table) == ["Intercept", *schema.LINEAR_FEATURES]
    for line in NOTEBOOK_TABLE.strip().splitlines():
        term, *printed = line.split()
        row = table["Intercept" if term == "(Intercept)" else term]
        values = [row[key] for key in ("coefficient", "std_error", "t", "p", "ci_lower", "ci_upper")]
        for text, value in zip(printed, values):
            if text.startswith("<"):  # a p-value printed as a bound
                assert value < float(text[1:])
            else:  # equal to the digits printed: within half a unit of the last one
                decimals = len(text.partition(".")[2])
                assert abs(value - float(text)) <= 0.5 * 10.0**-decimals + 1e-12, (term, text, value)


def test_linear_coefficient_table_is_statsmodels_ols_on_sample_standardized_features() -> None:
    used = DATASET.features[:, linear.COLUMNS]
    standardized = (used - used.mean(axis=0)) / used.std(axis=0, ddof=1)
    fit = sm.OLS(DATASET.target, sm.add_constant(standardized)).fit()
    table = json.loads(metadata("linear")["coefficients"])
    lower, upper = fit.conf_int(0.05).T
    for key, expected in {"coefficient": fit.params, "std_error": fit.bse, "t": fit.tvalues, "p": fit.pvalues,
                          "ci_lower": lower, "ci_upper": upper}.items():
        np.testing.assert_allclose([row[key] for row in table], expected, rtol=1e-9, atol=1e-300)


def test_linear_contributions_are_coefficient_times_distance_from_the_training_mean() -> None:
    pipeline = linear.fit(DATASET.features, DATASET.target)
    scaler = pipeline.named_steps["scale"].named_transformers_["scale"]
    slopes = np.zeros(13)
    slopes[linear.COLUMNS] = pipeline.named_steps["regress"].coef_ / scaler.scale_
    expected = (ROWS - DATASET.features.mean(axis=0)) * slopes
    assert np.abs(explained("linear", ROWS)["contributions"] - expected).max() <= 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_contributions_sum_to_the_prediction_minus_the_baseline(name: str) -> None:
    rows = ROWS if name == "linear" else SAMPLE
    baseline = json.loads(metadata(name)["baseline"])
    assert baseline["kind"] == "prediction at the training means"
    prediction_at_means = runtime.predict(session(name), DATASET.features.mean(axis=0, keepdims=True))[0]
    assert baseline["value"] == pytest.approx(prediction_at_means, abs=1e-4)
    completeness = explained(name, rows)["contributions"].sum(axis=1) - runtime.predict(session(name), rows)
    assert np.abs(completeness + baseline["value"]).max() <= 1e-3


def test_mlp_contributions_are_shaps_exact_values_with_the_training_means_as_background() -> None:
    rows, means = SAMPLE[:8], DATASET.features.mean(axis=0, keepdims=True)
    graph = session("mlp")
    explainer = shap.explainers.Exact(lambda x: runtime.predict(graph, x), shap.maskers.Independent(means))
    values = explainer(rows).values
    assert np.abs(explained("mlp", rows)["contributions"] - values).max() <= 1e-3


def test_shapley_weights_give_each_feature_its_weighted_marginal_effects_on_a_small_game() -> None:
    # Three players, f = product of the coalition's values: by symmetry each gets a third of f(1,1,1) - f(0,0,0).
    members = shapley.coalitions(3)
    f = np.where(members, 2.0, 1.0).prod(axis=1)
    np.testing.assert_allclose(f @ shapley.weights(3), [7 / 3] * 3)


@pytest.mark.parametrize("name", NAMES)
def test_a_call_feeding_only_the_features_computes_medv_and_skips_the_explanations(name: str) -> None:
    outputs = session(name).run(None, {"features": ROWS[:5].astype(np.float32)})
    assert [output.shape for output in outputs] == [(5, 1), (0, 1), (0, 1), (0, 13)]


@pytest.mark.parametrize("name", NAMES)
def test_explanations_have_their_shapes_and_bracket_the_prediction(name: str) -> None:
    outputs = explained(name, SAMPLE)
    predicted = runtime.predict(session(name), SAMPLE)
    assert [outputs[n].shape for n in schema.EXPLANATION_NAMES] == [(40, 1), (40, 1), (40, 13)]
    assert np.all(outputs["MEDV_lower"].ravel() < predicted) and np.all(predicted < outputs["MEDV_upper"].ravel())


@pytest.mark.parametrize("name", NAMES)
def test_golden_explanations_in_the_metadata_are_what_the_graph_computes(name: str) -> None:
    golden = json.loads(metadata(name)["golden"])
    outputs = explained(name, np.array(golden["inputs"]))
    assert set(golden["extra_outputs"]) == set(schema.EXPLANATION_NAMES)
    for output, values in golden["extra_outputs"].items():
        np.testing.assert_allclose(np.array(values).reshape(outputs[output].shape), outputs[output], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_interval_metadata_names_its_level_method_and_measured_coverage(name: str) -> None:
    interval = json.loads(metadata(name)["interval"])
    assert set(interval) == {"level", "method", "description", "coverage", "mean_width"}
    assert interval["level"] == 0.9 and 0.87 <= interval["coverage"] <= 0.93 and interval["mean_width"] > 0
    assert metadata(name)["explain_input"] == "explain"


def test_linear_interval_metadata_is_its_out_of_fold_coverage_and_width() -> None:
    x, y = DATASET.features, DATASET.target
    bounds = [out_of_fold(lambda fx, fy, fold, side=side: _ols_bound(fx, fy, side), x, y) for side in (0, 1)]
    interval = json.loads(metadata("linear")["interval"])
    assert interval["coverage"] == pytest.approx(np.mean((bounds[0] <= y) & (y <= bounds[1])))
    assert interval["mean_width"] == pytest.approx(np.mean(bounds[1] - bounds[0]))


def _ols_bound(features: np.ndarray, target: np.ndarray, side: int) -> object:
    fit = sm.OLS(target, sm.add_constant(features[:, linear.COLUMNS])).fit()
    return lambda rows: fit.get_prediction(sm.add_constant(rows[:, linear.COLUMNS], has_constant="add")).summary_frame(
        alpha=0.1)[["obs_ci_lower", "obs_ci_upper"]].to_numpy()[:, side]


def test_mlp_interval_half_width_is_the_conformal_quantile_of_the_absolute_residuals() -> None:
    residuals = np.arange(1.0, 20.0)  # 19 rows: rank ceil(20 * 0.9) = 18
    assert conformal.half_width(-residuals) == 18.0
    assert conformal.half_width(residuals[:5]) == 5.0  # too few rows for 90%: the largest


def test_mlp_interval_metadata_is_the_measured_nested_coverage() -> None:
    interval = json.loads(metadata("mlp")["interval"])
    measured = conformal.MEASURED
    assert (interval["coverage"], interval["mean_width"]) == (measured.coverage, measured.mean_width)
    golden = json.loads(metadata("mlp")["golden"])["extra_outputs"]
    widths = np.array(golden["MEDV_upper"]) - np.array(golden["MEDV_lower"])
    # One width for every row, the q the description names (the nested folds' models, fitted on fewer rows, err more).
    q = float(re.search(r"q = (\d+\.\d+)", interval["description"]).group(1))  # type: ignore[union-attr]
    np.testing.assert_allclose(widths, 2 * q, atol=1e-4)
    assert 2 * q < interval["mean_width"]


@pytest.mark.slow
def test_mlp_nested_coverage_of_the_90_percent_interval_lies_in_87_to_93_percent() -> None:
    """Repeats `python -m export.conformal` (30 trainings, ~30 s on one free core)."""
    measured = conformal.nested(mlp.CHOSEN, DATASET.features, DATASET.target).shipped
    assert 0.87 <= measured.coverage <= 0.93
    assert measured.coverage == pytest.approx(conformal.MEASURED.coverage, abs=0.01)
    assert measured.mean_width == pytest.approx(conformal.MEASURED.mean_width, rel=0.02)


def test_card_explains_the_interval_the_baseline_and_what_contributions_do_not_mean() -> None:
    for name in NAMES:
        card = (committed_file(name).parent / "model.md").read_text()
        assert "## Prediction interval and contributions" in card and "not causal" in card
        assert re.search(r"Measured coverage 0\.\d{3}, mean width \d+\.\d\d", card)
    assert "interventional Shapley values with the training means as the one background point" in (
        committed_file("mlp").parent / "model.md").read_text()
    assert "| CRIM | -0.664513 | 0.295568 |" in (committed_file("linear").parent / "model.md").read_text()
