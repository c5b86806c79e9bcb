"""KServe's Python ModelServer with a custom onnxruntime model: what KServe's docs show for a custom predictor.

Run in .venv-peer-kserve (kserve and onnxruntime; of ours only onnx_session.py): `BENCH_MODEL=model.onnx python
benchmarks/peers/kserve_server.py --http_port N ...` with ModelServer's own flags (it parses argv on import).
ModelServer has no bind-address option and hard-codes 0.0.0.0 for REST and [::] for gRPC; the loopback patches
below keep a benchmark on 127.0.0.1 and change nothing else.
"""

from __future__ import annotations

import os
from typing import Any

import uvicorn
from grpc import aio
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.protocol.grpc import server as grpc_server
from kserve.protocol.rest import server as rest_server
from kserve.utils.utils import generate_uuid
from onnx_session import LinearSession

HOST = "127.0.0.1"


class LoopbackConfig(uvicorn.Config):
    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(app, **{**options, "host": HOST})


class LoopbackGrpc:
    """Stands in for `grpc.aio` in KServe's gRPC module: its server binds the port it is given on 127.0.0.1."""

    @staticmethod
    def server(*args: Any, **options: Any) -> aio.Server:
        server = aio.server(*args, **options)
        bind = server.add_insecure_port
        server.add_insecure_port = lambda address: bind(f"{HOST}:{address.rsplit(':', 1)[1]}")
        return server


class Linear(Model):
    def __init__(self, path: str) -> None:
        super().__init__("linear")
        self.model = LinearSession(path)
        self.ready = True

    def predict(self, payload: InferRequest, headers: Any = None, response_headers: Any = None) -> InferResponse:
        """Answers in the form asked, as KServe's own predictors do (kserve.utils.utils.get_predict_response):
        binary for a binary output request or raw gRPC inputs, JSON or typed contents otherwise."""
        prediction = self.model.predict(payload.inputs[0].as_numpy())
        output = InferOutput(name=self.model.output, shape=list(prediction.shape), datatype="FP32")
        output.set_data_from_numpy(prediction, binary_data=payload.use_binary_outputs)
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id or generate_uuid(),
                             use_binary_outputs=payload.use_binary_outputs, requested_outputs=payload.request_outputs)


if __name__ == "__main__":
    rest_server.uvicorn.Config = LoopbackConfig
    grpc_server.aio = LoopbackGrpc
    ModelServer().start([Linear(os.environ["BENCH_MODEL"])])
