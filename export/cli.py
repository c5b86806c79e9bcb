"""`python -m export`: retrain both models and write each as a new version: ONNX file, card and plot."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from export import data
from export.errors import ExportError

if TYPE_CHECKING:
    from export.build import Exported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/housing.csv"), help="training CSV")
    parser.add_argument("--out", type=Path, default=Path("onnx_models"), help="the model store")
    parser.add_argument("--version", type=int, help="the version to write (default: the next after the newest)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        dataset = data.load(args.data)
        # Imported only now: bad data is reported at once, without first loading torch and skl2onnx (~3 s).
        from export import run

        models = run.export(dataset, args.out, args.version)
    except ExportError as error:
        print(f"export: error: {error}", file=sys.stderr)
        return 1
    print(_table(models))
    written = ", ".join(f"{m.name}/{m.metadata['model_version']}/" for m in models)
    print(f"wrote {written} (model.onnx, model.md, model.png) in {args.out}/ "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


def _table(models: list[Exported]) -> str:
    header = (f"{'model':<8}{'RMSE':>8}{'MAE':>8}{'R2':>8}{'CV RMSE':>10}{'CV MAE':>8}{'CV R2':>8}"
              f"{'parity 506':>12}{'parity 10k':>12}")
    lines = [
        f"{m.name:<8}{m.in_sample.rmse:>8.3f}{m.in_sample.mae:>8.3f}{m.in_sample.r2:>8.3f}"
        f"{m.cv.rmse:>10.3f}{m.cv.mae:>8.3f}{m.cv.r2:>8.3f}"
        f"{m.parity.training_rows:>12.1e}{m.parity.random_rows:>12.1e}"
        for m in models
    ]
    return "\n".join([header, *lines])
