"""The MLP's prediction interval: split-conformal on the out-of-fold residuals of the export's own
cross-validation, MEDV +- q with q their finite-sample (1 - alpha) quantile of |residual|.

`python -m export.conformal` measures its coverage honestly, with nested folds: in each outer fold the
inner 5-fold cross-validation of the outer training rows gives q, a model trained on those rows (as the
export trains the final one) predicts the outer test rows, none of which fitted or calibrated anything.
That takes 30 trainings (minutes), so the export writes the figures measured here, MEASURED, and the
command checks that they are still what it measures.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import KFold

from export import data, mlp
from export.metrics import FOLDS, SPLIT_SEED, Array
from export.schema import INTERVAL_LEVEL

METHOD = "split-conformal on 5-fold out-of-fold residuals"


@dataclass(frozen=True)
class Coverage:
    coverage: float  # share of held-out rows inside their interval
    mean_width: float
    rows: int


# `python -m export.conformal` on data/housing.csv with mlp.CHOSEN.
MEASURED = Coverage(coverage=0.8992, mean_width=11.4964, rows=506)


def half_width(residuals: Array, level: float = INTERVAL_LEVEL) -> float:
    """The ceil((n + 1) level)-th smallest |residual|: covers a new row with probability >= level when
    rows are exchangeable (Vovk et al.; Lei et al. 2018)."""
    ordered = np.sort(np.abs(residuals))
    rank = min(math.ceil((len(ordered) + 1) * level), len(ordered))
    return float(ordered[rank - 1])


def nested(config: mlp.Config, features: Array, target: Array) -> Coverage:
    covered, widths = [], []
    outer = KFold(FOLDS, shuffle=True, random_state=SPLIT_SEED).split(features)
    for number, (train, test) in enumerate(outer, start=1):
        oof, kept = mlp.cross_validate(config, features[train], target[train], desc=f"outer {number}")
        q = half_width(target[train] - oof)
        trained = mlp.train(config, features[train], target[train], epochs=mlp.final_epochs(config, kept))
        predicted = mlp.predictor(trained.module)(features[test])
        covered.append(np.abs(target[test] - predicted) <= q)
        widths.append(np.full(len(test), 2 * q))
    return Coverage(float(np.concatenate(covered).mean()), float(np.concatenate(widths).mean()), len(target))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m export.conformal", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/housing.csv"))
    dataset = data.load(parser.parse_args().data)
    started = time.perf_counter()
    measured = nested(mlp.CHOSEN, dataset.features, dataset.target)
    print(f"nested {FOLDS}x{FOLDS} coverage of the {INTERVAL_LEVEL:.0%} interval: {measured.coverage:.4f}, "
          f"mean width {measured.mean_width:.4f} over {measured.rows} rows "
          f"({time.perf_counter() - started:.0f} s); MEASURED is {MEASURED}")


if __name__ == "__main__":
    main()
