"""`python -m export.graph_forms`: time the candidate ONNX graph forms of both models, as the service runs them.

Single-threaded onnxruntime sessions (the serving default), batch 1 and 100,000 rows, calls that fetch MEDV
only; for each form the parity with the native model on the training rows is shown too, and for the shipped
forms the time of a single-row call that opens the explanation gate. Prints the context with the numbers.
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

from export import data, explain, linear, mlp, ols, runtime
from export.metrics import Array, Predict
from export.parity import random_rows
from export.schema import EXPLAIN_NAME

BATCHES = (1, 100_000)
REPEATS = 5
SECONDS_PER_REPEAT = 0.2
MAX_SECONDS = 10.0  # per call; longer ones are estimated from batch 1


def forms(dataset: data.Dataset) -> dict[str, tuple[onnx.ModelProto, Predict]]:
    x, y = dataset.features, dataset.target
    pipeline = linear.fit(x, y)
    converted = linear.convert(pipeline)
    folded_linear = linear.fold(converted)
    linear_explanation = linear.explanation(ols.fit(x[:, linear.COLUMNS], y))
    # Speed does not depend on how well the weights are trained (nor on the interval's width): a short fit is enough.
    network = mlp.train(mlp.CHOSEN, x, y, epochs=200).module
    folded_mlp = mlp.to_onnx(mlp.fold_standardization(network))
    mlp_explanation = mlp.explanation(mlp.fold_standardization(network), x.mean(axis=0), 5.0)
    return {
        "linear skl2onnx default: ml Scaler, LinearRegressor": (converted, pipeline.predict),
        "linear skl2onnx div, no ml ops: Sub, Div, MatMul": (linear.convert(pipeline, True), pipeline.predict),
        "linear folded: MatMul, Add": (linear.fold(converted, "MatMul"), pipeline.predict),
        "linear folded: Gemm, no explanations": (folded_linear, pipeline.predict),
        "linear Gemm + explanations, ungated": (explain.attach(folded_linear, linear_explanation, gated=False),
                                                pipeline.predict),
        "linear Gemm + explanations, gated  [shipped]": (explain.attach(folded_linear, linear_explanation),
                                                        pipeline.predict),
        "mlp torch.onnx: Sub, Div, 3 Gemm": (mlp.to_onnx(network), mlp.predictor(network)),
        "mlp torch.onnx, scaler folded: 3 Gemm, no expl.": (folded_mlp, mlp.predictor(network)),
        "mlp 3 Gemm + explanations, ungated": (explain.attach(folded_mlp, mlp_explanation, gated=False),
                                               mlp.predictor(network)),
        "mlp 3 Gemm + explanations, gated  [shipped]": (explain.attach(folded_mlp, mlp_explanation),
                                                       mlp.predictor(network)),
    }


def seconds_per_call(session: ort.InferenceSession, rows: Array, explain: bool = False) -> float:
    """Best of REPEATS timings of a call fetching MEDV only (with `explain`: every output, the gate open),
    each long enough to average out timer resolution."""
    feed = {session.get_inputs()[0].name: rows.astype(np.float32)}
    fetch = [session.get_outputs()[0].name]
    if explain:
        feed[EXPLAIN_NAME], fetch = np.array(True), [output.name for output in session.get_outputs()]
    started = time.perf_counter()
    session.run(fetch, feed)
    calls = max(1, int(SECONDS_PER_REPEAT / max(time.perf_counter() - started, 1e-7)))
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(calls):
            session.run(fetch, feed)
        timings.append((time.perf_counter() - started) / calls)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m export.graph_forms", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/housing.csv"))
    dataset = data.load(parser.parse_args().data)
    rows = random_rows(dataset.features, max(BATCHES))
    print(f"{datetime.date.today()}, {_cpu()}, {os.cpu_count()} cores visible, onnxruntime {ort.__version__}, "
          f"torch {version('torch')}, skl2onnx {version('skl2onnx')}, intra_op_num_threads=1; MEDV-only calls, "
          f"and a single-row call with {EXPLAIN_NAME}=True where the graph has the gate")
    columns = "".join(f"{f'batch {b:,} us/call':>22}{'rows/s':>10}" for b in BATCHES)
    print(f"{'form':<50}{'parity 506':>11}{columns}{'explain, batch 1 us':>21}")
    for name, (model, native) in forms(dataset).items():
        session = runtime.session(model)
        difference = np.max(np.abs(runtime.predict(session, dataset.features) - native(dataset.features)))
        cells, per_row = "", 0.0
        for batch in BATCHES:
            # An ungated Shapley graph would take minutes for 100,000 rows: estimated (~) from batch 1 instead.
            estimated = per_row * batch > MAX_SECONDS
            seconds = per_row * batch if estimated else seconds_per_call(session, rows[:batch])
            per_row = per_row or seconds / batch
            cells += f"{('~' if estimated else '') + f'{seconds * 1e6:.1f}':>22}{batch / seconds:>10.3g}"
        gated = EXPLAIN_NAME in {i.name for i in session.get_overridable_initializers()}
        explained = f"{seconds_per_call(session, rows[:1], explain=True) * 1e6:>21.1f}" if gated else ""
        print(f"{name:<50}{difference:>11.1e}{cells}{explained}", flush=True)


def _cpu() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.exists() else []
    return models[0] if models else platform.machine()


if __name__ == "__main__":
    main()
