"""Regression metrics and k-fold cross-validation, shared by both models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import KFold

Array = npt.NDArray[np.float64]
Predict = Callable[[Array], Array]
# Fits a model on (features, target) and returns its prediction function; `fold` names the run.
Fit = Callable[[Array, Array, str], Predict]

FOLDS = 5
SPLIT_SEED = 0


@dataclass(frozen=True)
class Metrics:
    rmse: float
    mae: float
    r2: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def score(actual: Array, predicted: Array) -> Metrics:
    error = np.asarray(predicted, dtype=np.float64).ravel() - actual
    total = float(np.sum((actual - actual.mean()) ** 2))
    return Metrics(
        rmse=float(np.sqrt(np.mean(error**2))),
        mae=float(np.mean(np.abs(error))),
        r2=1.0 - float(np.sum(error**2)) / total,
    )


def folds(features: Array) -> list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
    """(training rows, test rows) of each of the FOLDS folds, the same split for every model."""
    return list(KFold(FOLDS, shuffle=True, random_state=SPLIT_SEED).split(features))


def out_of_fold(fit: Fit, features: Array, target: Array) -> Array:
    """Each row predicted by the model fitted on the other folds; the caller's fit does all preprocessing."""
    predicted = np.empty_like(target)
    for number, (train, test) in enumerate(folds(features), start=1):
        predict = fit(features[train], target[train], f"fold {number}/{FOLDS}")
        predicted[test] = predict(features[test]).ravel()
    return predicted
