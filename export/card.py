"""The model card (Markdown) and its predicted-vs-actual plot (PNG), both built from the exported model."""

from __future__ import annotations

import io
import json
from typing import Any

from matplotlib.figure import Figure

from export.build import Exported
from export.parity import RANDOM_ROWS
from export.schema import INPUT_NAME, OUTPUT_NAME, TARGET


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
