"""Prove that an ONNX graph computes what the native model computes, on training rows and random rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from export import runtime
from export.errors import ExportError
from export.metrics import Array, Predict

TOLERANCE = 1e-3
RANDOM_ROWS = 10_000
RANDOM_SEED = 0
GOLDEN_ROWS = 8
# onnxruntime's kernels differ by CPU in the last bits (~1e-5 here); a changed model or runtime by far more.
GOLDEN_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Parity:
    training_rows: float  # max |onnx - native| over the training rows
    random_rows: float  # ... over rows drawn uniformly from the training ranges


@dataclass(frozen=True)
class Golden:
    """Inputs and the graph's own outputs, for the service to reproduce whenever it loads the file."""

    inputs: list[list[float]]
    outputs: list[float]
    tolerance: float = GOLDEN_TOLERANCE


def golden(model: onnx.ModelProto, features: Array) -> Golden:
    """The training means, the feature-wise minima and maxima, and random rows within the ranges."""
    rows = np.vstack([features.mean(axis=0), features.min(axis=0), features.max(axis=0),
                      random_rows(features, GOLDEN_ROWS - 3)]).astype(np.float32)
    outputs = runtime.predict(model, rows)
    return Golden(rows.tolist(), outputs.tolist())


def random_rows(features: Array, count: int = RANDOM_ROWS) -> Array:
    rng = np.random.default_rng(RANDOM_SEED)
    return rng.uniform(features.min(axis=0), features.max(axis=0), size=(count, features.shape[1]))


def check(name: str, model: onnx.ModelProto, native: Predict, features: Array) -> Parity:
    """Raise unless the graph matches `native` within TOLERANCE on both row sets."""
    session = runtime.session(model)

    def max_difference(rows: Array) -> float:
        # Both sides see the same float32-representable inputs, so only the computation differs.
        rows = rows.astype(np.float32).astype(np.float64)
        return float(np.max(np.abs(runtime.predict(session, rows) - native(rows).ravel())))

    parity = Parity(max_difference(features), max_difference(random_rows(features)))
    worst = max(parity.training_rows, parity.random_rows)
    if not worst <= TOLERANCE:  # also catches NaN
        raise ExportError(f"{name}: ONNX graph differs from the native model by {worst:.3g} > {TOLERANCE:g}")
    return parity
