"""The baselines' model: the export stage's scikit-learn pipeline, trained the same way, saved with joblib.

Runs in the main environment (it imports `export`); MLServer and the naive app load the file in the
bench environment, whose scikit-learn is pinned to the same version so that the pickle loads.
"""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
from sklearn.pipeline import Pipeline

from benchmarks.paths import DATA
from export import data, linear

# The linear model's prediction for the first data row: every target must answer it.
FIRST_ROW_PREDICTION = 29.9197


def train() -> Pipeline:
    dataset = data.load(DATA)
    return linear.fit(dataset.features, dataset.target)


def save(path: Path) -> Path:
    """Train and save the pipeline to `path`; fail loudly if it does not predict the known first row."""
    pipeline = train()
    first = float(pipeline.predict(data.load(DATA).features[:1])[0])
    if not np.isclose(first, FIRST_ROW_PREDICTION, atol=5e-4):
        raise RuntimeError(f"the retrained pipeline predicts {first:.4f} for row 1, expected {FIRST_ROW_PREDICTION}")
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, path)
    return path
