"""onnxruntime sessions as the service runs them: single-threaded, CPU."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from export.schema import EXPLAIN_NAME, EXPLANATION_NAMES


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    # Not its warning that the `explain` initializer is also an input: the gate is meant to be overridable.
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def predict(
    model: onnx.ModelProto | ort.InferenceSession, features: npt.NDArray[np.floating]
) -> npt.NDArray[np.float64]:
    """Predictions (the first output) as a flat float64 array; the graph itself runs in float32."""
    runner = _runner(model)
    (output,) = runner.run([runner.get_outputs()[0].name], {runner.get_inputs()[0].name: features.astype(np.float32)})
    return np.asarray(output, dtype=np.float64).ravel()


def explain(
    model: onnx.ModelProto | ort.InferenceSession, features: npt.NDArray[np.floating]
) -> dict[str, npt.NDArray[np.float64]]:
    """The explanation outputs by name, as float64 arrays of their graph shapes."""
    runner = _runner(model)
    feed = {runner.get_inputs()[0].name: features.astype(np.float32), EXPLAIN_NAME: np.array(True)}
    outputs = runner.run(list(EXPLANATION_NAMES), feed)
    return {name: np.asarray(output, dtype=np.float64) for name, output in zip(EXPLANATION_NAMES, outputs)}


def _runner(model: onnx.ModelProto | ort.InferenceSession) -> ort.InferenceSession:
    return session(model) if isinstance(model, onnx.ModelProto) else model
