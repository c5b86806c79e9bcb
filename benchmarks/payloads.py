"""Request bodies for every wire format and batch size, and the check that an answer is right.

Rows cycle through the training data, so a batch of N holds real records; the expected answers come
from our linear ONNX graph (float32), which export proved equal to the scikit-learn pipeline.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import orjson

from benchmarks.baseline_model import FIRST_ROW_PREDICTION
from benchmarks.paths import DATA, model_file
from export import data
from export.schema import FEATURE_NAMES, INPUT_NAME, OUTPUT_NAME
from serve.model import Model

# float32 vs float64 inputs and summation order: the runtimes agree to ~1e-5; 1e-3 catches any real error.
TOLERANCE = 1e-3
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
# A raw output's bytes, by the datatype its tensor declares (MLServer's sklearn runtime answers FP64).
RAW_DTYPES = {"FP32": "<f4", "FP64": "<f8"}


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes
    headers: dict[str, str]


def rows(n: int) -> np.ndarray:
    features = data.load(DATA).features
    return features[np.arange(n) % len(features)]


def expected(n: int) -> np.ndarray:
    return Model.load(model_file("linear")).predict(rows(n).astype(np.float32))


def record_request(n: int, single_path: str, batch_path: str) -> Request:
    """Our /models format (and the naive app's): one record, or {"instances": [records]}."""
    records = [dict(zip(FEATURE_NAMES, row, strict=True)) for row in rows(n).tolist()]
    if n == 1:
        return Request(single_path, orjson.dumps(records[0]), {"Content-Type": "application/json"})
    return Request(batch_path, orjson.dumps({"instances": records}), {"Content-Type": "application/json"})


def v2_json_request(n: int, model: str = "linear") -> Request:
    tensor = {"name": INPUT_NAME, "shape": [n, len(FEATURE_NAMES)], "datatype": "FP32",
              "data": rows(n).ravel().tolist()}
    return Request(f"/v2/models/{model}/infer", orjson.dumps({"inputs": [tensor]}),
                   {"Content-Type": "application/json"})


def v2_binary_request(n: int, model: str = "linear") -> Request:
    """The binary tensor data extension, as tritonclient sends it: JSON header, then raw little-endian FP32."""
    raw = rows(n).astype("<f4").tobytes()
    head = orjson.dumps({
        "inputs": [{"name": INPUT_NAME, "shape": [n, len(FEATURE_NAMES)], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": OUTPUT_NAME, "parameters": {"binary_data": True}}],
    })
    return Request(f"/v2/models/{model}/infer", head + raw,
                   {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))})


def rows_request(n: int) -> Request:
    """LitServe's and BentoML's JSON as our peers take it: POST /predict {"rows": [[13 features], ...]}."""
    return Request("/predict", orjson.dumps({"rows": rows(n).tolist()}), {"Content-Type": "application/json"})


def grpc_request(n: int, output: str | None = OUTPUT_NAME, model: str = "linear") -> Request:
    """ModelInfer with the rows as one raw little-endian FP32 tensor, framed for the wire (the body h2load posts).
    `output` None asks for the model's default outputs (MLServer's sklearn runtime refuses other names)."""
    x = rows(n).astype("<f4")
    pb = protocol()
    message = pb.ModelInferRequest(
        model_name=model, inputs=[pb.ModelInferRequest.InferInputTensor(name=INPUT_NAME, datatype="FP32",
                                                                         shape=list(x.shape))],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=output)] if output else [],
        raw_input_contents=[x.tobytes()])
    return Request(GRPC_INFER, frame(message.SerializeToString()),
                   {"content-type": "application/grpc", "te": "trailers"})


def protocol() -> ModuleType:
    """Our generated messages, imported at first use: they and tritonclient's register the same protobuf names and
    cannot share a process (kserve/kserve#3099), and the test suite loads tritonclient's."""
    from serve.protocol import open_inference_grpc_pb2

    return open_inference_grpc_pb2


def frame(message: bytes) -> bytes:
    """gRPC's length-prefixed message: not compressed (0), then the length as 4 bytes big-endian."""
    return struct.pack(">BI", 0, len(message)) + message


def unframe(body: bytes) -> bytes:
    compressed, length = struct.unpack(">BI", body[:5])
    if compressed or length != len(body) - 5:
        raise ValueError(f"not one uncompressed gRPC message: flag {compressed}, length {length} of {len(body) - 5}")
    return body[5:]


def grpc_answer(body: bytes, headers: dict[str, str], n: int) -> list[float]:
    """Predictions from a ModelInferResponse (unframed): raw, as every server answers a raw request."""
    answer = protocol().ModelInferResponse.FromString(body)
    if not answer.raw_output_contents:
        raise ValueError(f"a raw request answered without raw_output_contents: {str(answer)[:300]}")
    raw = np.frombuffer(answer.raw_output_contents[0], RAW_DTYPES[answer.outputs[0].datatype])
    return [float(value) for value in raw]


def record_answer(body: bytes, headers: dict[str, str], n: int) -> list[float]:
    answer = orjson.loads(body)
    return [answer["prediction"]] if n == 1 else list(answer["predictions"])


def v2_answer(body: bytes, headers: dict[str, str], n: int) -> list[float]:
    """Predictions from a V2 response, JSON or binary (Inference-Header-Content-Length set)."""
    head_length = headers.get("inference-header-content-length")
    head = orjson.loads(body[:int(head_length)] if head_length else body)
    output = head["outputs"][0]
    if head_length:
        raw = body[int(head_length):]
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return [float(value) for value in np.ravel(output["data"])]


def litserve_answer(body: bytes, headers: dict[str, str], n: int) -> list[float]:
    return list(orjson.loads(body)["output"])


def bentoml_answer(body: bytes, headers: dict[str, str], n: int) -> list[float]:
    """BentoML answers an API method returning an array with the bare JSON array."""
    return list(orjson.loads(body))


def constant_answer(body: bytes, headers: dict[str, str], n: int) -> list[float]:
    """The ceiling answers a constant: only that it is JSON is checked, not a prediction."""
    orjson.loads(body)
    return []


Answer = Callable[[bytes, dict[str, str], int], list[float]]


def check(predictions: list[float], n: int, truth: np.ndarray) -> str | None:
    """None when right, else what is wrong."""
    if len(predictions) != n:
        return f"{len(predictions)} predictions for {n} rows"
    if abs(predictions[0] - FIRST_ROW_PREDICTION) > TOLERANCE:
        return f"first prediction {predictions[0]:.4f}, expected {FIRST_ROW_PREDICTION}"
    worst = float(np.max(np.abs(np.asarray(predictions) - truth[:n])))
    return f"predictions differ from the ONNX graph's by up to {worst:.2e}" if worst > TOLERANCE else None
