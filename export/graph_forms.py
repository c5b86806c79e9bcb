"""`python -m export.graph_forms`: time the candidate ONNX graph forms of both models, as the service runs them.

Single-threaded onnxruntime sessions (the serving default), batch 1 and 100,000 rows; for each form the
parity with the native model on the training rows is shown too. Prints the context with the numbers.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from export import data, linear, mlp, runtime
from export.metrics import Array, Predict
from export.parity import random_rows

BATCHES = (1, 100_000)
REPEATS = 5
SECONDS_PER_REPEAT = 0.2


def forms(dataset: data.Dataset) -> dict[str, tuple[onnx.ModelProto, Predict]]:
    x, y = dataset.features, dataset.target
    pipeline = linear.fit(x, y)
    converted = linear.convert(pipeline)
    # Speed does not depend on how well the weights are trained: a short fit is enough.
    network = mlp.train(mlp.CHOSEN, x, y, epochs=200).module
    return {
        "linear skl2onnx default: ml Scaler, LinearRegressor": (converted, pipeline.predict),
        "linear skl2onnx div, no ml ops: Sub, Div, MatMul": (linear.convert(pipeline, True), pipeline.predict),
        "linear folded: MatMul, Add": (linear.fold(converted, "MatMul"), pipeline.predict),
        "linear folded: Gemm  [shipped]": (linear.fold(converted), pipeline.predict),
        "mlp torch.onnx: Sub, Div, 3 Gemm": (mlp.to_onnx(network), mlp.predictor(network)),
        "mlp torch.onnx, scaler folded: 3 Gemm  [shipped]": (
            mlp.to_onnx(mlp.fold_standardization(network)), mlp.predictor(network)),
    }


def seconds_per_call(session: ort.InferenceSession, rows: Array) -> float:
    """Best of REPEATS timings, each long enough to average out timer resolution."""
    feed = {session.get_inputs()[0].name: rows.astype(np.float32)}
    started = time.perf_counter()
    session.run(None, feed)
    calls = max(1, int(SECONDS_PER_REPEAT / max(time.perf_counter() - started, 1e-7)))
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(calls):
            session.run(None, feed)
        timings.append((time.perf_counter() - started) / calls)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m export.graph_forms", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/housing.csv"))
    dataset = data.load(parser.parse_args().data)
    rows = random_rows(dataset.features, max(BATCHES))
    print(f"{datetime.date.today()}, {_cpu()}, {os.cpu_count()} cores visible, onnxruntime {ort.__version__}, "
          f"torch {version('torch')}, skl2onnx {version('skl2onnx')}, intra_op_num_threads=1")
    columns = "".join(f"{f'batch {b:,} us/call':>22}{'rows/s':>10}" for b in BATCHES)
    print(f"{'form':<50}{'parity 506':>11}{columns}")
    for name, (model, native) in forms(dataset).items():
        session = runtime.session(model)
        difference = np.max(np.abs(runtime.predict(session, dataset.features) - native(dataset.features)))
        cells = ""
        for batch in BATCHES:
            seconds = seconds_per_call(session, rows[:batch])
            cells += f"{seconds * 1e6:>22.1f}{batch / seconds:>10.3g}"
        print(f"{name:<50}{difference:>11.1e}{cells}", flush=True)


def _cpu() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.exists() else []
    return models[0] if models else platform.machine()


if __name__ == "__main__":
    main()
