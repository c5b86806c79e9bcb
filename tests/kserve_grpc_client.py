"""Run by tests/test_grpc_kserve.py with the kserve venv's python (kserve cannot share a process, or a venv,
with tritonclient.grpc): one infer through KServe's InferenceGRPCClient; prints the predictions as JSON.

Usage: python tests/kserve_grpc_client.py HOST:PORT MODEL ROWS_JSON
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest


async def main(address: str, model: str, rows: list[list[float]]) -> list[float]:
    x = np.array(rows, dtype=np.float32)
    tensor = InferInput("features", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    client = InferenceGRPCClient(address, retries=0)
    try:
        assert await client.is_server_ready() and await client.is_model_ready(model)
        response = await client.infer(InferRequest(model, [tensor], request_id="kserve-1"))
    finally:
        await client.close()
    assert response.id == "kserve-1", response.id
    return response.outputs[0].as_numpy().reshape(-1).tolist()  # type: ignore[no-any-return]


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))))
