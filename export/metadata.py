"""The ONNX metadata: the contract with the service. Every key it reads is written here and only here."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx

from export import reproducible
from export.data import Dataset
from export.metrics import FOLDS, Metrics
from export.parity import Golden
from export.schema import EXPLAIN_NAME, FEATURE_NAMES, FEATURES, INPUT_NAME, INTERVAL_LEVEL, OUTPUT_NAME, TARGET

PRODUCER = "housing-serving export"
# The drift reference's bins start from the training deciles (0%, 10%, ..., 100%).
DRIFT_QUANTILES = np.linspace(0.0, 1.0, 11)
# Both models' contributions are relative to this (export/explain.py says what the outputs are).
BASELINE_KIND = "prediction at the training means"


@dataclass(frozen=True)
class Interval:
    """The prediction interval's metadata; its level is INTERVAL_LEVEL."""

    method: str
    description: str  # one sentence
    coverage: float  # measured on rows that neither fitted nor calibrated the interval
    mean_width: float


def build(
    *,
    name: str,
    version: int,
    description: str,
    features_used: tuple[str, ...],
    in_sample: Metrics,
    cv: Metrics,
    dataset: Dataset,
    hyperparameters: dict[str, Any],
    golden: Golden,
    interval: Interval,
    baseline: float,
    coefficients: list[dict[str, float | str]] | None = None,
) -> dict[str, str]:
    """`coefficients`, the coefficient table, only for the linear model."""
    return {
        "model_name": name,
        "model_version": str(version),
        "description": description,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "feature_names": _json(list(FEATURE_NAMES)),
        "features_used": _json(list(features_used)),
        "features": _json(_feature_statistics(dataset)),
        "drift_reference": _json(_drift_reference(dataset)),
        "target": _json({"name": TARGET.name, "description": TARGET.description, "unit": TARGET.unit}),
        "metrics": _json({"in_sample": in_sample.as_dict(), "cv": {**cv.as_dict(), "folds": FOLDS}}),
        "data_sha256": dataset.sha256,
        "training_environment": _json(reproducible.training_environment()),
        "hyperparameters": _json(hyperparameters),
        "golden": _json(asdict(golden)),
        "explain_input": EXPLAIN_NAME,
        "interval": _json({"level": INTERVAL_LEVEL, **asdict(interval)}),
        "baseline": _json({"value": baseline, "kind": BASELINE_KIND}),
    } | ({"coefficients": _json(coefficients)} if coefficients is not None else {})


def attach(model: onnx.ModelProto, metadata: dict[str, str]) -> onnx.ModelProto:
    """A copy of `model` carrying the metadata, version, producer and description."""
    tagged = onnx.ModelProto()
    tagged.CopyFrom(model)
    del tagged.metadata_props[:]
    onnx.helper.set_model_props(tagged, metadata)
    tagged.model_version = int(metadata["model_version"])
    tagged.producer_name = PRODUCER
    tagged.producer_version = ""
    tagged.doc_string = metadata["description"]
    return tagged


def _feature_statistics(dataset: Dataset) -> list[dict[str, Any]]:
    x = dataset.features
    # std is the population std (ddof=0), the one the models' standardization uses.
    columns = zip(FEATURES, x.min(axis=0), x.max(axis=0), x.mean(axis=0), x.std(axis=0))
    return [
        {"name": c.name, "description": c.description, "unit": c.unit, "aliases": list(c.aliases),
         "min": float(lo), "max": float(hi), "mean": float(mean), "std": float(std)}
        for c, lo, hi, mean, std in columns
    ]


def _drift_reference(dataset: Dataset) -> list[dict[str, Any]]:
    """Per feature the bin edges and the share of training rows in each bin, which serve compares recent
    requests against. Edges are the unique training deciles, taken as data values (inverted CDF), so ties
    collapse them (CHAS is 0/1, ZN mostly 0, RAD has 9 values); the shares come from the bins the training
    rows actually fall in. A feature with edges e_0 < ... < e_k has k + 3 bins: below e_0 (the training
    minimum), [e_i, e_i+1) for each i, exactly e_k (the maximum, where B's 396.9 ties pile up), above e_k.
    Rows are binned in float32, the precision requests arrive in, as the range check compares them."""
    reference = []
    for column, values in zip(FEATURES, dataset.features.T):
        edges = np.unique(np.quantile(values, DRIFT_QUANTILES, method="inverted_cdf"))
        edges32 = edges.astype(np.float32)
        # One more upper bound, the next float32 after the maximum, splits "exactly e_k" from "above e_k".
        uppers = np.append(edges32, np.nextafter(edges32[-1], np.float32(np.inf)))
        bins = np.searchsorted(uppers, values.astype(np.float32), side="right")
        shares = np.bincount(bins, minlength=len(edges) + 2) / len(values)
        reference.append({"name": column.name, "edges": edges.tolist(), "shares": shares.tolist()})
    return reference


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)
