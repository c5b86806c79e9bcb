"""BentoML with the linear model in onnxruntime: a `@bentoml.service` class with one `@bentoml.api`, as BentoML's
docs show.

Run in .venv-peer-bentoml (bentoml and onnxruntime; of ours only onnx_session.py): `BENCH_MODEL=model.onnx bentoml
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
from bentoml.validators import DType, Shape
from onnx_session import LinearSession


@bentoml.service(workers=1)
class Linear:
    def __init__(self) -> None:
        self.model = LinearSession(os.environ["BENCH_MODEL"])

    @bentoml.api
    def predict(self, rows: Annotated[np.ndarray, Shape((-1, 13)), DType("float32")]) -> np.ndarray:
        return self.model.predict(rows).ravel()
