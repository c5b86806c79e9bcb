"""The model card (Markdown) and its predicted-vs-actual plot (PNG), both built from the exported model."""

from __future__ import annotations

import io
import json
from typing import Any

from matplotlib.figure import Figure

from export.build import Exported
from export.parity import RANDOM_ROWS
from export.schema import CONTRIBUTIONS_NAME, EXPLAIN_NAME, INPUT_NAME, LOWER_NAME, OUTPUT_NAME, TARGET, UPPER_NAME
from export.shapley import PARITY_ROWS


def render(model: Exported) -> str:
    tags = model.metadata
    features = json.loads(tags["features"])
    used = set(json.loads(tags["features_used"]))
    hyperparameters = json.loads(tags["hyperparameters"])
    rows = len(model.actual)
    cap = float(model.actual.max())
    censored = int((model.actual == cap).sum())
    feature_rows = [
        f"| {_named(f)} "
        f"| {'yes' if f['name'] in used else 'no'} | {f['description']} | {f['unit']} "
        f"| {f['min']:g} | {f['max']:g} |"
        for f in features
    ]
    return "\n".join([
        f"# Model card: `{tags['model_name']}` (version {tags['model_version']})",
        "",
        f"{tags['description']}.",
        "",
        f"- File: `{tags['model_name']}/{tags['model_version']}/model.onnx`, one self-contained ONNX graph. "
        f"Input `{INPUT_NAME}`: float32 "
        f"`[batch, {len(features)}]`, raw values in the column order below; output `{OUTPUT_NAME}`: float32 "
        f"`[batch, 1]`, {TARGET.description} in {TARGET.unit}. Standardization is inside the graph.",
        f"- Training: {', '.join(f'{key} {value}' for key, value in hyperparameters.items())}.",
        "- Data: Boston housing (Harrison & Rubinfeld 1978), all "
        f"{rows} rows of `housing.csv` (sha256 `{tags['data_sha256'][:16]}…`); provenance in `data/README.md`.",
        "",
        "## Metrics",
        "",
        f"| {TARGET.name}, USD 1000s | RMSE | MAE | R² |",
        "|---|---|---|---|",
        f"| in-sample (all {rows} rows, the ONNX graph) | {_cells(model.in_sample.as_dict())} |",
        f"| 5-fold cross-validation (out-of-fold) | {_cells(model.cv.as_dict())} |",
        "",
        f"Parity, ONNX graph vs the native model, max |difference|: {model.parity.training_rows:.2g} on the "
        f"training rows, {model.parity.random_rows:.2g} on {RANDOM_ROWS:,} random rows within the training ranges.",
        "",
        "![predicted vs actual](model.png)",
        "",
        *_explanations(model),
        "## Features",
        "",
        "| name | used | description | unit | min | max |",
        "|---|---|---|---|---|---|",
        *feature_rows,
        "",
        "## Intended use",
        "",
        "Reproducing and serving the workshop's models, and teaching model deployment. Not for valuing real "
        "property: the data are 1970 census tracts of one metropolitan area.",
        "",
        "## Caveats",
        "",
        "- Feature `B` encodes a town's share of Black residents through a parabola and assumes that racial "
        "self-segregation has a market effect. It is kept only to reproduce the workshop; a real deployment "
        "should not use it (see `data/README.md`)."
        + ("" if "B" in used else " This model does not use it, but it is part of the common input."),
        "- Outside the training ranges (min-max above) predictions are extrapolations and can be far off; the "
        "ranges are in the ONNX metadata (`features`) so callers can warn.",
        f"- {TARGET.name} is censored at {cap:g} ({censored} rows): the model cannot tell {cap:g} from more.",
        "- The 5-fold figures are the honest estimate of error on new tracts; in-sample figures are optimistic.",
        "",
    ])


def _explanations(model: Exported) -> list[str]:
    tags = model.metadata
    interval, baseline = json.loads(tags["interval"]), json.loads(tags["baseline"])
    parity = ", ".join(f"`{name}` {difference:.2g}" for name, difference in model.parity.explanations.items())
    rows = f"the {len(model.actual)} training rows and {RANDOM_ROWS:,} random rows"
    if tags["model_name"] == "mlp":
        rows = f"{PARITY_ROWS} of {rows} each (torch takes ~30 ms a row for the Shapley values)"
        meaning = (
            "exact interventional Shapley values with the training means as the one background point: the "
            "network is evaluated on all 2^13 = 8,192 points that take this row's values on a subset of the "
            "features and the means elsewhere, and feature j gets its Shapley-weighted average marginal effect. "
            "They depend on that choice of background: another reference (a sample of rows, the median) "
            "gives other values. Hybrid points can lie where no data were (the means of unrelated features "
            "combined with this row's values), and the network's answers there are extrapolations")
    else:
        meaning = ("coefficient * (x - training mean) for each of the 8 used features (0 for the other 5), "
                   "exactly")
    lines = [
        "## Prediction interval and contributions",
        "",
        f"Outputs `{LOWER_NAME}`, `{UPPER_NAME}` (float32 `[batch, 1]`) and `{CONTRIBUTIONS_NAME}` (float32 "
        f"`[batch, 13]`, feature order as below) follow `{OUTPUT_NAME}`; they are computed only when the call "
        f"feeds the boolean scalar input `{EXPLAIN_NAME}` as true (default false: 0 rows), so that a "
        f"`{OUTPUT_NAME}`-only call costs what it did before.",
        "",
        f"- Interval: {interval['level']:.0%}, {interval['method']}. {interval['description']}. Measured coverage "
        f"{interval['coverage']:.3f}, mean width {interval['mean_width']:.2f} {TARGET.unit}. The coverage is "
        "marginal: on average over tracts drawn like these, not for each one; outside the training ranges, and "
        f"at the censored {TARGET.name} = {float(model.actual.max()):g}, it promises nothing.",
        f"- Baseline: {baseline['value']:.4f} {TARGET.unit}, the {baseline['kind']}. The contributions sum to "
        f"{OUTPUT_NAME} - baseline (completeness).",
        f"- Contributions: {meaning}. They describe the model, not the world: not causal effects (moving a "
        "feature in a real tract moves others with it), and only relative to the baseline.",
        f"- Parity with the native computation on {rows}, max |difference|: {parity}.",
        "",
    ]
    if "coefficients" in tags:
        lines += [
            "Coefficients on features standardized with the sample standard deviation (ddof = 1, the "
            "notebook's MLJ `Standardizer`), so each slope is per standard deviation of its feature:",
            "",
            "| term | coefficient | std. error | t | p | 95% lower | 95% upper |",
            "|---|---|---|---|---|---|---|",
            *(f"| {row['term']} | {row['coefficient']:.6g} | {row['std_error']:.6g} | {row['t']:.2f} "
              f"| {row['p']:.3g} | {row['ci_lower']:.6g} | {row['ci_upper']:.6g} |"
              for row in json.loads(tags["coefficients"])),
            "",
        ]
    return lines


def _named(feature: dict[str, Any]) -> str:
    aliases = ", ".join(f"`{alias}`" for alias in feature["aliases"])
    return f"{feature['name']} (also {aliases})" if aliases else str(feature["name"])


def plot(model: Exported) -> bytes:
    figure = Figure(figsize=(5, 5), dpi=80)
    axes = figure.add_subplot()
    axes.scatter(model.actual, model.out_of_fold, s=8, alpha=0.6,
                 label=f"5-fold out-of-fold (RMSE {model.cv.rmse:.2f})")
    axes.scatter(model.actual, model.predicted, s=8, alpha=0.6, label=f"in-sample (RMSE {model.in_sample.rmse:.2f})")
    highest = max(model.actual.max(), model.predicted.max(), model.out_of_fold.max())
    limits = (0.0, float(highest) * 1.05)
    axes.plot(limits, limits, color="grey", linewidth=1)
    axes.set(xlim=limits, ylim=limits, title=f"{model.metadata['model_name']}: predicted vs actual",
             xlabel=f"actual {TARGET.name} ({TARGET.unit})", ylabel=f"predicted {TARGET.name} ({TARGET.unit})")
    axes.legend(loc="upper left", fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _cells(metrics: dict[str, float]) -> str:
    return " | ".join(f"{value:.3f}" for value in metrics.values())
