"""BentoML with the linear model in onnxruntime: a `@bentoml.service` class with one `@bentoml.api`, as BentoML's
docs show.

Run in .venv-peer-bentoml (bentoml and onnxruntime only; not this project's code): `BENCH_MODEL=model.onnx bentoml
serve bentoml_service:Linear --working-dir benchmarks/peers --host 127.0.0.1 --port N`, its production server (no
`--development`, no `--reload`). Its JSON is BentoML's for an API method: the arguments by name, POST /predict
`{"rows": [[13 features], ...]}` (rows in the model's feature order) -> `[MEDV, ...]`.

One core: `workers=1`; its access log left on, its default (ours logs each request by default too).
"""

from __future__ import annotations

import os
from typing import Annotated

import bentoml
import numpy as np
import onnxruntime
from bentoml.validators import DType, Shape


@bentoml.service(workers=1)
class Linear:
    def __init__(self) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # one core, as ours
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(os.environ["BENCH_MODEL"], options,
                                                    providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name  # the prediction; the graph has more outputs

    @bentoml.api
    def predict(self, rows: Annotated[np.ndarray, Shape((-1, 13)), DType("float32")]) -> np.ndarray:
        (prediction,) = self.session.run([self.output], {self.input: rows})
        return prediction.ravel()
