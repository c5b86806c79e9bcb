"""LitServe with the linear model in onnxruntime: a LitAPI's setup / decode / predict / encode, as LitServe's docs show.

Run in .venv-peer-litserve (litserve and onnxruntime; of ours only onnx_session.py): `BENCH_MODEL=model.onnx python
benchmarks/peers/litserve_server.py PORT`. Its JSON is LitServe's: the parsed body goes to `decode_request` and
`encode_response`'s dict comes back, so POST /predict `{"rows": [[13 features], ...]}` (rows in the model's feature
order) -> `{"output": [MEDV, ...]}`, the `{"output": ...}` of LitServe's examples.

One core, as LitServer's docstring recommends for production: `accelerator="cpu"`, one inference worker
(`workers_per_device=1`, and so one API server process), `fast_queue=True` (ZeroMQ, "for > 100 RPS"), and
`log_level="warning"` with no client file, as its "Production Configuration" example; that logs no request.
`max_batch_size=1`, LitServe's default: its batching stacks same-shaped inputs, and these carry 1 to 1,000 rows.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import litserve
import numpy as np
from onnx_session import LinearSession

HOST = "127.0.0.1"


class Linear(litserve.LitAPI):
    def setup(self, device: str) -> None:
        self.model = LinearSession(os.environ["BENCH_MODEL"])

    # No annotations on `request` or the response: LitServe would turn them into FastAPI models and validate
    # every request and answer with pydantic, which its examples do not do.
    def decode_request(self, request, **kwargs: Any) -> np.ndarray:  # type: ignore[no-untyped-def]
        return np.asarray(request["rows"], dtype=np.float32)

    def predict(self, rows: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self.model.predict(rows)

    def encode_response(self, prediction: np.ndarray, **kwargs: Any):  # type: ignore[no-untyped-def]
        return {"output": prediction.ravel().tolist()}


if __name__ == "__main__":
    server = litserve.LitServer(Linear(max_batch_size=1), accelerator="cpu", workers_per_device=1, fast_queue=True)
    server.run(host=HOST, port=int(sys.argv[1]), log_level="warning", generate_client_file=False)
