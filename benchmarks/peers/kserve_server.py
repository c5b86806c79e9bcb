"""KServe's Python ModelServer with a custom onnxruntime model: what KServe's docs show for a custom predictor.

Run in .venv-peer-kserve (kserve and onnxruntime only; not this project's code): `BENCH_MODEL=model.onnx python
benchmarks/peers/kserve_server.py --http_port N ...` with ModelServer's own flags (it parses argv on import).
ModelServer has no bind-address option and hard-codes 0.0.0.0 for REST; the loopback patch below keeps a
benchmark on 127.0.0.1 and changes nothing else.
"""

from __future__ import annotations

import os
from typing import Any

import onnxruntime
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.protocol.rest import server as rest_server
from kserve.utils.utils import generate_uuid

HOST = "127.0.0.1"


class LoopbackConfig(uvicorn.Config):
    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(app, **{**options, "host": HOST})


class Linear(Model):
    def __init__(self, path: str) -> None:
        super().__init__("linear")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # one core, as ours
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name  # the prediction; the graph has more outputs
        self.ready = True

    def predict(self, payload: InferRequest, headers: Any = None, response_headers: Any = None) -> InferResponse:
        (prediction,) = self.session.run([self.output], {self.input: payload.inputs[0].as_numpy()})
        output = InferOutput(name=self.output, shape=list(prediction.shape), datatype="FP32")
        output.set_data_from_numpy(prediction, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id or generate_uuid())


if __name__ == "__main__":
    rest_server.uvicorn.Config = LoopbackConfig
    ModelServer().start([Linear(os.environ["BENCH_MODEL"])])
