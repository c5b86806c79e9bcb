"""`python -m export.select`: the study that chose mlp.CHOSEN. Prints each candidate's 5-fold CV metrics.

Every candidate is scored by the same honest 5-fold cross-validation as the export (scaler fitted and
early-stopping split held out inside each fold). Takes a few minutes; the export itself runs only CHOSEN.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from export import data
from export.metrics import score
from export.mlp import CHOSEN, Config, cross_validate

CANDIDATES: tuple[Config, ...] = (
    # The workshop notebook's network and training, as it was (Flux Adam, fixed epochs).
    Config(hidden=(8,), optimizer="Adam", lr=2e-3, weight_decay=0.0, max_epochs=50_000, patience=None),
    Config(hidden=(64, 64), lr=1e-3, weight_decay=1e-4, max_epochs=3000, patience=None),
    Config(hidden=(64, 64), lr=1e-3, weight_decay=1e-4, max_epochs=5000, patience=200),
    CHOSEN,
    Config(hidden=(64, 64), lr=3e-3, weight_decay=1e-4, max_epochs=5000, patience=200),
    Config(hidden=(64, 64), lr=1e-3, weight_decay=1e-4, max_epochs=5000, patience=500),
    Config(hidden=(32,), lr=1e-3, weight_decay=1e-4, max_epochs=5000, patience=200),
    Config(hidden=(128, 128), lr=1e-3, weight_decay=1e-4, max_epochs=5000, patience=200),
    Config(hidden=(64, 64, 64), lr=1e-3, weight_decay=1e-4, max_epochs=5000, patience=200),
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m export.select", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/housing.csv"))
    dataset = data.load(parser.parse_args().data)
    print(f"{'CV RMSE':>8}{'MAE':>7}{'R2':>7}  {'kept epochs':<28}{'time':>7}  candidate")
    results = []
    for config in CANDIDATES:
        started = time.perf_counter()
        predicted, kept_epochs, _ = cross_validate(config, dataset.features, dataset.target, desc="candidate")
        metrics = score(dataset.target, predicted)
        results.append((metrics.rmse, config))
        chosen = "  <- CHOSEN" if config == CHOSEN else ""
        print(f"{metrics.rmse:>8.3f}{metrics.mae:>7.3f}{metrics.r2:>7.3f}  {kept_epochs!s:<28}"
              f"{time.perf_counter() - started:>6.1f}s  {config.describe()}{chosen}", flush=True)
    best = min(results, key=lambda result: result[0])[1]
    print(f"lowest CV RMSE: {best.describe()}" + (" (= CHOSEN)" if best == CHOSEN else " (differs from CHOSEN)"))


if __name__ == "__main__":
    main()
