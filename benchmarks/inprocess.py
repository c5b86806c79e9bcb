"""In-process cost per call, single thread on the server's core: our ONNX graphs in onnxruntime (through
serve's own Model, the hot path) against the native models and numpy's folded affine map, the compute
limit of the linear model."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from threadpoolctl import threadpool_limits
from torch import nn

from benchmarks.baseline_model import train
from benchmarks.cpus import SERVER_CPU
from benchmarks.paths import model_file
from benchmarks.payloads import TOLERANCE, rows
from serve.model import Model

# Blocks per measurement, interleaved across implementations; the median block is reported.
BLOCKS = 5


@dataclass(frozen=True)
class Implementation:
    name: str
    model: str
    label: str
    # Called once per batch size, outside the timing: returns the timed call (input already converted).
    prepare: Callable[[np.ndarray], Callable[[], object]]


def _onnxruntime(name: str) -> Callable[[np.ndarray], Callable[[], object]]:
    model = Model.load(model_file(name))

    def prepare(x: np.ndarray) -> Callable[[], object]:
        x32 = x.astype(np.float32)
        return lambda: model.predict(x32)
    return prepare


def _sklearn() -> Callable[[np.ndarray], Callable[[], object]]:
    pipeline = train()

    def prepare(x: np.ndarray) -> Callable[[], object]:
        return lambda: pipeline.predict(x)  # float64: what it was trained on
    return prepare


def _folded_affine() -> Callable[[np.ndarray], Callable[[], object]]:
    constants = _initializers("linear")
    w, b = constants["weights"], constants["bias"]

    def prepare(x: np.ndarray) -> Callable[[], object]:
        x32 = x.astype(np.float32)
        return lambda: x32 @ w + b
    return prepare


def _torch_eager() -> Callable[[np.ndarray], Callable[[], object]]:
    """The MLP as the torch module it was exported from (standardization folded, weights from the file)."""
    module = nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)).eval()
    # The graph also holds the interval and explanation constants: take the module's own weights only.
    weights = _initializers("mlp")
    module.load_state_dict({name: torch.from_numpy(weights[name]) for name in module.state_dict()})

    def prepare(x: np.ndarray) -> Callable[[], object]:
        tensor = torch.from_numpy(x.astype(np.float32))

        def call() -> object:
            with torch.inference_mode():
                return module(tensor)
        return call
    return prepare


def implementations() -> list[Implementation]:
    return [
        Implementation("linear-onnxruntime", "linear", "linear: our ONNX graph, onnxruntime", _onnxruntime("linear")),
        Implementation("linear-sklearn", "linear", "linear: scikit-learn pipeline", _sklearn()),
        Implementation("linear-numpy", "linear", "linear: numpy X @ w + b (compute limit)", _folded_affine()),
        Implementation("mlp-onnxruntime", "mlp", "mlp: our ONNX graph, onnxruntime", _onnxruntime("mlp")),
        Implementation("mlp-torch", "mlp", "mlp: torch eager, inference_mode", _torch_eager()),
    ]


def measure(sizes: tuple[int, ...], block_seconds: float) -> list[dict[str, object]]:
    """One row per (implementation, batch size): microseconds per call and rows per second."""
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {SERVER_CPU})
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            chosen = implementations()
            _check_agreement(chosen)
            return [row for size in sizes for row in _measure_size(chosen, size, block_seconds)]
    finally:
        torch.set_num_threads(torch_threads)
        os.sched_setaffinity(0, affinity)


def _measure_size(chosen: list[Implementation], size: int, block_seconds: float) -> list[dict[str, object]]:
    x = rows(size)
    calls = [impl.prepare(x) for impl in chosen]
    numbers = [_calibrate(call, block_seconds) for call in calls]
    per_call: list[list[float]] = [[] for _ in chosen]
    for _ in range(BLOCKS):
        for timings, call, number in zip(per_call, calls, numbers, strict=True):
            timings.append(_time_block(call, number) / number)
    rows_out = []
    for impl, timings in zip(chosen, per_call, strict=True):
        seconds = statistics.median(timings)
        rows_out.append({"implementation": impl.name, "model": impl.model, "label": impl.label, "rows": size,
                         "us_per_call": seconds * 1e6, "rows_per_s": size / seconds})
    return rows_out


def _calibrate(call: Callable[[], object], block_seconds: float) -> int:
    call()  # first-call allocations are not the steady state
    once = _time_block(call, 1)
    return max(1, int(block_seconds / max(once, 1e-7)))


def _time_block(call: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        call()
    return time.perf_counter() - start


def _check_agreement(chosen: list[Implementation]) -> None:
    """Timing only means something if every implementation computes the same function."""
    x = rows(1000)
    by_model: dict[str, np.ndarray] = {}
    for impl in chosen:
        y = np.asarray(impl.prepare(x)(), dtype=np.float64).reshape(-1)
        reference = by_model.setdefault(impl.model, y)
        worst = float(np.max(np.abs(y - reference)))
        if worst > TOLERANCE:
            raise RuntimeError(f"{impl.name} differs from {impl.model}'s first implementation by {worst:.2e}")


def _initializers(name: str) -> dict[str, np.ndarray]:
    graph = onnx.load(str(model_file(name))).graph
    return {tensor.name: numpy_helper.to_array(tensor).copy() for tensor in graph.initializer}
