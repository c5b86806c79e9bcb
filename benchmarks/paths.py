"""Where the suite reads and writes."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "housing.csv"
MODEL_DIR = ROOT / "onnx_models"


def model_file(name: str, version: int = 1) -> Path:
    return MODEL_DIR / name / str(version) / "model.onnx"

RESULTS = ROOT / "benchmarks" / "results"
# Generated inputs (pickled pipeline, MLServer settings, request bodies, server logs); gitignored via /build/.
WORK = ROOT / "build" / "bench"
BENCH_VENV = ROOT / ".venv-bench"
BENCH_PYTHON = BENCH_VENV / "bin" / "python"
# Each peer server in its own venv from its own pinned requirements file (`make bench` builds them).
KSERVE_PEER_PYTHON = ROOT / ".venv-peer-kserve" / "bin" / "python"
LITSERVE_PEER_PYTHON = ROOT / ".venv-peer-litserve" / "bin" / "python"
BENTOML_PEER_PYTHON = ROOT / ".venv-peer-bentoml" / "bin" / "python"
