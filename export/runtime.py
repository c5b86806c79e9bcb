"""onnxruntime sessions as the service runs them: single-threaded, CPU."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def predict(
    model: onnx.ModelProto | ort.InferenceSession, features: npt.NDArray[np.floating]
) -> npt.NDArray[np.float64]:
    """Predictions as a flat float64 array; the graph itself runs in float32."""
    runner = session(model) if isinstance(model, onnx.ModelProto) else model
    (output,) = runner.run(None, {runner.get_inputs()[0].name: features.astype(np.float32)})
    return np.asarray(output, dtype=np.float64).ravel()
