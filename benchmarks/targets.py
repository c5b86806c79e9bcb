"""What is measured over HTTP: each target is a server plus the wire format it is sent."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from benchmarks import payloads
from benchmarks.paths import (
    BENCH_PYTHON,
    BENTOML_PEER_PYTHON,
    KSERVE_PEER_PYTHON,
    LITSERVE_PEER_PYTHON,
    MODEL_DIR,
    model_file,
)
from benchmarks.payloads import Answer, Request
from benchmarks.servers import HOST, ServerSpec, write_mlserver_config

# Where the bench writes the pipeline the baselines load (relative to the work dir).
PIPELINE = Path("linear") / "model.joblib"
UVICORN_FLAGS = ["--host", HOST, "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                 "--log-level", "warning"]


def _ours(access_log: str, workers: int, port: int, work: Path) -> list[str]:
    return [sys.executable, "-m", "serve", "--port", str(port), "--model-dir", str(MODEL_DIR),
            "--access-log", access_log, "--workers", str(workers), "--grpc-port", "0"]


def _ours_as_started(flags: list[str], port: int, work: Path, grpc_port: int) -> list[str]:
    """`python -m serve` with its defaults (text access log, gRPC on) but for the ports and `flags`."""
    return [sys.executable, "-m", "serve", "--port", str(port), "--grpc-port", str(grpc_port), *flags]


def _ceiling(port: int, work: Path) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "benchmarks.ceiling:app", "--port", str(port), *UVICORN_FLAGS]


def _naive(port: int, work: Path) -> list[str]:
    pipeline = f"BENCH_PIPELINE={(work / PIPELINE).resolve()}"
    return ["env", pipeline, str(BENCH_PYTHON), "-m", "uvicorn", "benchmarks.naive:app", "--port", str(port),
            *UVICORN_FLAGS]


def _mlserver(port: int, work: Path, grpc_port: int) -> list[str]:
    config = write_mlserver_config(work / "mlserver", port, grpc_port, (work / PIPELINE).resolve())
    return [str(BENCH_PYTHON.with_name("mlserver")), "start", str(config)]


def _kserve(port: int, work: Path, grpc_port: int) -> list[str]:
    """KServe's defaults for one core: 1 worker, its latency log line per request (as our default logs each
    request), gRPC on (in the same process and event loop as REST)."""
    return ["env", f"BENCH_MODEL={model_file('linear')}", str(KSERVE_PEER_PYTHON), "benchmarks/peers/kserve_server.py",
            "--http_port", str(port), "--workers", "1", "--enable_grpc", "true", "--grpc_port", str(grpc_port)]


def _litserve(port: int, work: Path) -> list[str]:
    """Its settings for one core are in the server's docstring."""
    return ["env", f"BENCH_MODEL={model_file('linear')}", str(LITSERVE_PEER_PYTHON),
            "benchmarks/peers/litserve_server.py", str(port)]


def _bentoml(port: int, work: Path) -> list[str]:
    """`bentoml serve`, its production server; no usage statistics sent, its home in the work dir."""
    return ["env", f"BENCH_MODEL={model_file('linear')}", "BENTOML_DO_NOT_TRACK=True",
            f"BENTOML_HOME={(work / 'bentoml').resolve()}", str(BENTOML_PEER_PYTHON.with_name("bentoml")), "serve",
            "bentoml_service:Linear", "--working-dir", "benchmarks/peers", "--host", HOST, "--port", str(port)]


SERVERS = {
    "ours": ServerSpec("ours", partial(_ours, "off", 1)),
    "ours-default": ServerSpec("ours-default", partial(_ours_as_started, []), grpc=True),
    "ours-json-log": ServerSpec("ours-json-log", partial(_ours_as_started, ["--access-log", "json"]), grpc=True),
    # 2 workers against 1, both unpinned: the only comparison where the server may use both cores.
    "ours-1-worker": ServerSpec("ours-1-worker", partial(_ours, "off", 1)),
    "ours-2-workers": ServerSpec("ours-2-workers", partial(_ours, "off", 2)),
    "ceiling": ServerSpec("ceiling", _ceiling),
    "naive": ServerSpec("naive", _naive),
    "mlserver": ServerSpec("mlserver", _mlserver, grpc=True),
    "kserve": ServerSpec("kserve", _kserve, grpc=True),
    "litserve": ServerSpec("litserve", _litserve),
    "bentoml": ServerSpec("bentoml", _bentoml),
}
BASELINE_SERVERS = frozenset({"naive", "mlserver"})  # load the pipeline the bench writes
# The Python each peer needs: a target whose venv is missing is skipped and said so.
PEER_PYTHONS = {"mlserver": BENCH_PYTHON, "naive": BENCH_PYTHON, "kserve": KSERVE_PEER_PYTHON,
                "litserve": LITSERVE_PEER_PYTHON, "bentoml": BENTOML_PEER_PYTHON, "mlserver-grpc": BENCH_PYTHON,
                "kserve-grpc": KSERVE_PEER_PYTHON, "kserve-v2-binary": KSERVE_PEER_PYTHON}


@dataclass(frozen=True)
class Target:
    name: str
    label: str
    server: str
    request: Callable[[int], Request]
    answer: Answer
    # "grpc": sent to the server's gRPC port with h2load and checked with a gRPC client; else wrk over HTTP/1.1.
    transport: Literal["http", "grpc"] = "http"


OURS_RECORD = partial(payloads.record_request, single_path="/models/linear/predict",
                      batch_path="/models/linear/predict")
TARGETS = {target.name: target for target in [
    Target("ceiling", "ceiling: bare Starlette, parse JSON, constant", "ceiling",
           partial(payloads.record_request, single_path="/predict", batch_path="/predict"),
           payloads.constant_answer),
    Target("ours", "ours: /models record JSON", "ours", OURS_RECORD, payloads.record_answer),
    Target("ours-v2-json", "ours: V2 JSON", "ours", payloads.v2_json_request, payloads.v2_answer),
    Target("ours-v2-binary", "ours: V2 binary FP32", "ours", payloads.v2_binary_request, payloads.v2_answer),
    Target("ours-1-worker", "ours: 1 worker, unpinned", "ours-1-worker", OURS_RECORD, payloads.record_answer),
    Target("ours-2-workers", "ours: 2 workers, unpinned", "ours-2-workers", OURS_RECORD, payloads.record_answer),
    Target("ours-default", "ours: /models, defaults as `python -m serve` starts (text access log, gRPC on)",
           "ours-default", OURS_RECORD, payloads.record_answer),
    Target("ours-json-log", "ours: /models, defaults but `--access-log json`", "ours-json-log", OURS_RECORD,
           payloads.record_answer),
    Target("mlserver", "MLServer 1.7.1 sklearn runtime, V2 JSON", "mlserver", payloads.v2_json_request,
           payloads.v2_answer),
    Target("kserve", "KServe 0.21.0 ModelServer, onnxruntime model, V2 JSON", "kserve", payloads.v2_json_request,
           payloads.v2_answer),
    Target("litserve", "LitServe 0.2.19, onnxruntime, 1 CPU worker, fast_queue, log level warning (no access log)",
           "litserve", payloads.rows_request, payloads.litserve_answer),
    Target("bentoml", "BentoML 1.4.40 `bentoml serve`, onnxruntime, workers=1, access log on", "bentoml",
           payloads.rows_request, payloads.bentoml_answer),
    Target("naive", "naive: FastAPI + pydantic + pandas + sklearn", "naive",
           partial(payloads.record_request, single_path="/predict", batch_path="/predict/batch"),
           payloads.record_answer),
    # gRPC with the tensor as raw FP32 bytes (raw_input_contents), not typed fp32_contents: KServe's client sends it
    # by default, MLServer accepts it (its own client's use_raw), and all three answer a raw request raw.
    Target("ours-grpc", "ours: gRPC raw FP32, defaults as `python -m serve` starts", "ours-default",
           payloads.grpc_request, payloads.grpc_answer, "grpc"),
    Target("ours-default-v2-binary", "ours: V2 binary FP32, defaults as `python -m serve` starts", "ours-default",
           payloads.v2_binary_request, payloads.v2_answer),
    Target("mlserver-grpc", "MLServer 1.7.1 sklearn runtime, gRPC raw FP32", "mlserver",
           partial(payloads.grpc_request, output=None), payloads.grpc_answer, "grpc"),
    Target("kserve-grpc", "KServe 0.21.0 ModelServer, onnxruntime model, gRPC raw FP32", "kserve",
           payloads.grpc_request, payloads.grpc_answer, "grpc"),
    Target("kserve-v2-binary", "KServe 0.21.0 ModelServer, onnxruntime model, V2 binary FP32", "kserve",
           payloads.v2_binary_request, payloads.v2_answer),
]}
