"""What every peer does alike: the linear graph in onnxruntime, set up as ours is (one core).

Each peer imports it as a sibling module: it runs from benchmarks/peers in its own venv, without this project's
packages.
"""

from __future__ import annotations

import numpy as np
import onnxruntime


class LinearSession:
    def __init__(self, path: str) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name  # the prediction; the graph has more outputs

    def predict(self, rows: np.ndarray) -> np.ndarray:
        (prediction,) = self.session.run([self.output], {self.input: rows})
        return prediction
