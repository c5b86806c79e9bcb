"""Prove that an ONNX graph computes what the native model computes, on training rows and random rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from export import runtime
from export.errors import ExportError
from export.explain import Explain
from export.metrics import Array, Predict

TOLERANCE = 1e-3
RANDOM_ROWS = 10_000
RANDOM_SEED = 0
GOLDEN_ROWS = 8
# onnxruntime's kernels differ by CPU in the last bits (~1e-5 here); a changed model or runtime by far more.
GOLDEN_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Parity:
    training_rows: float  # max |onnx - native| of MEDV over the training rows
    random_rows: float  # ... over rows drawn uniformly from the training ranges
    # Each explanation output: max |onnx - native| over the training rows and the random rows together.
    explanations: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Golden:
    """Inputs and the graph's own outputs, for the service to reproduce whenever it loads the file."""

    inputs: list[list[float]]
    outputs: list[float]
    tolerance: float = GOLDEN_TOLERANCE
    # The explanation outputs for the same rows, by output name: k floats for each bound, k x 13 contributions.
    extra_outputs: dict[str, list[float] | list[list[float]]] = field(default_factory=dict)


def golden(model: onnx.ModelProto, features: Array) -> Golden:
    """The training means, the feature-wise minima and maxima, and random rows within the ranges."""
    rows = np.vstack([features.mean(axis=0), features.min(axis=0), features.max(axis=0),
                      random_rows(features, GOLDEN_ROWS - 3)]).astype(np.float32)
    session = runtime.session(model)
    extra = {name: (value if value.shape[1] > 1 else value.ravel()).tolist()
             for name, value in runtime.explain(session, rows).items()}
    return Golden(rows.tolist(), runtime.predict(session, rows).tolist(), extra_outputs=extra)


def random_rows(features: Array, count: int = RANDOM_ROWS) -> Array:
    rng = np.random.default_rng(RANDOM_SEED)
    return rng.uniform(features.min(axis=0), features.max(axis=0), size=(count, features.shape[1]))


def check(name: str, model: onnx.ModelProto, native: Predict, features: Array, explain: Explain | None = None,
          explained_rows: int | None = None) -> Parity:
    """Raise unless the graph matches `native` (and `explain`, for each explanation output) within
    TOLERANCE on both row sets; the explanations on `explained_rows` rows of each, evenly spaced, if given."""
    session = runtime.session(model)
    # Both sides see the same float32-representable inputs, so only the computation differs.
    row_sets = [rows.astype(np.float32).astype(np.float64) for rows in (features, random_rows(features))]

    def max_difference(rows: Array) -> float:
        return float(np.max(np.abs(runtime.predict(session, rows) - native(rows).ravel())))

    differences: dict[str, list[float]] = {}
    if explain is not None:
        for rows in row_sets:
            if explained_rows is not None:
                rows = rows[np.linspace(0, len(rows) - 1, explained_rows).astype(int)]
            wanted = explain(rows).outputs()
            for output, value in runtime.explain(session, rows).items():
                differences.setdefault(output, []).append(float(np.max(np.abs(value - wanted[output]))))
    # np.max, not max: a NaN must propagate to the check below.
    explanations = {output: float(np.max(values)) for output, values in differences.items()}
    parity = Parity(*(max_difference(rows) for rows in row_sets), explanations)
    worst = float(np.max([parity.training_rows, parity.random_rows, *explanations.values()]))
    if not worst <= TOLERANCE:  # also catches NaN
        raise ExportError(f"{name}: ONNX graph differs from the native model by {worst:.3g} > {TOLERANCE:g} "
                          f"(MEDV {parity.training_rows:.3g} / {parity.random_rows:.3g}, {explanations})")
    return parity
