"""Mixed traffic for load tests: valid single, batch and V2 binary requests whose answers are checked
against onnxruntime run in-process on the model files, and invalid requests that must get their 4xx."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np

from tests.conftest import FEATURES, FIRST, ROWS
from tests.load import Check, Request
from tests.test_predict import reference

MODELS = ("linear", "mlp")
RECORDS = [{name: row[name] for name in FEATURES} for row in ROWS]
X = np.array([[row[name] for name in FEATURES] for row in ROWS], dtype=np.float32)
EXPECTED = {model: reference(model, RECORDS) for model in MODELS}
JSON = (("Content-Type", "application/json"),)


def close(got: Any, want: np.ndarray) -> bool:
    """Equal to float32 precision: the server may run a row inside a larger coalesced batch."""
    return bool(np.allclose(np.asarray(got, dtype=np.float64), want, rtol=1e-6, atol=1e-5))


def predictions(key: str, want: np.ndarray) -> Check:
    def check(status: int, headers: dict[str, str], body: bytes) -> str | None:
        if status != 200:
            return f"status {status}: {body[:200]!r}"
        got = json.loads(body)[key]
        return None if close(got, want) else f"{key} {got} != expected {want.tolist()}"
    return check


def binary_outputs(want: np.ndarray) -> Check:
    def check(status: int, headers: dict[str, str], body: bytes) -> str | None:
        if status != 200:
            return f"status {status}: {body[:200]!r}"
        head_length = int(headers["inference-header-content-length"])
        got = np.frombuffer(body[head_length:], "<f4")
        return None if close(got, want) else f"outputs {got.tolist()} != expected {want.tolist()}"
    return check


def refused(expected: int) -> Check:
    def check(status: int, headers: dict[str, str], body: bytes) -> str | None:
        if status != expected or "error" not in json.loads(body):
            return f"expected a JSON {expected}, got {status}: {body[:200]!r}"
        return None
    return check


def first_with(raw: str) -> bytes:
    return ("{" + ", ".join(f'"{k}": {raw if k == "TAX" else json.dumps(v)}' for k, v in FIRST.items()) + "}").encode()


INVALID = [  # (kind, method, path, body, headers, status)
    ("malformed", "POST", "/models/linear/predict", b'{"CRIM": 0.1,', JSON, 400),
    ("missing field", "POST", "/models/mlp/predict", b'{"CRIM": 0.1}', JSON, 422),
    ("NaN", "POST", "/models/linear/predict", first_with("NaN"), JSON, 422),
    ("1e400", "POST", "/models/mlp/predict", first_with("1e400"), JSON, 422),
    ("duplicate key", "POST", "/models/mlp/predict", first_with("1")[:-1] + b', "TAX": 2}', JSON, 422),
    ("unknown model", "POST", "/models/nope/predict", json.dumps(FIRST).encode(), JSON, 404),
    ("wrong type", "POST", "/models/linear/predict", json.dumps(FIRST).encode(), (("Content-Type", "text/plain"),),
     415),
    ("wrong method", "GET", "/models/linear/predict", b"", (), 405),
    ("v2 shape", "POST", "/v2/models/linear/infer",
     json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 12], "data": [1.0] * 12}]}).encode(),
     JSON, 400),
]


class Mix:
    """Requests drawn at random: 35% single records, 25% batches, 20% V2 binary, 20% invalid."""

    def __init__(self, seed: int = 0, max_batch: int = 64):
        self.random = random.Random(seed)
        self.max_batch = max_batch

    def __call__(self) -> Request:
        roll = self.random.random()
        model = self.random.choice(MODELS)
        if roll < 0.35:
            return self.single(model)
        if roll < 0.60:
            return self.batch(model)
        if roll < 0.80:
            return self.v2_binary(model)
        kind, method, path, body, headers, status = self.random.choice(INVALID)
        return Request(f"invalid: {kind}", method, path, body, refused(status), headers)

    def single(self, model: str) -> Request:
        i = self.random.randrange(len(RECORDS))
        record: Any = RECORDS[i] if self.random.random() < 0.5 else X[i].tolist()
        return Request("single", "POST", f"/models/{model}/predict", json.dumps(record).encode(),
                       predictions("prediction", EXPECTED[model][i]), JSON)

    def batch(self, model: str) -> Request:
        rows = [self.random.randrange(len(RECORDS)) for _ in range(self.random.randint(2, self.max_batch))]
        instances: list[Any] = [RECORDS[i] for i in rows] if self.random.random() < 0.5 else X[rows].tolist()
        return Request("batch", "POST", f"/models/{model}/predict", json.dumps({"instances": instances}).encode(),
                       predictions("predictions", EXPECTED[model][rows]), JSON)

    def v2_binary(self, model: str) -> Request:
        rows = [self.random.randrange(len(RECORDS)) for _ in range(self.random.randint(1, self.max_batch))]
        x = X[rows]
        head = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": list(x.shape),
                                       "parameters": {"binary_data_size": x.nbytes}}],
                           "parameters": {"binary_data_output": True}}).encode()
        return Request("v2 binary", "POST", f"/v2/models/{model}/infer", head + x.tobytes(),
                       binary_outputs(EXPECTED[model][rows]),
                       (("Content-Type", "application/octet-stream"),
                        ("Inference-Header-Content-Length", str(len(head)))))
