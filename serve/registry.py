"""Loads every model in the model folder at start-up."""

from __future__ import annotations

import re
from pathlib import Path

from serve.errors import ModelLoadError
from serve.model import Model

_URL_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")


def load_models(model_dir: Path, threads: int = 1) -> dict[str, Model]:
    """All `*.onnx` files in `model_dir`, by model name; raises ModelLoadError naming the culprit."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"model folder {model_dir} does not exist")
    paths = sorted(model_dir.glob("*.onnx"))
    if not paths:
        raise ModelLoadError(f"model folder {model_dir} holds no .onnx file (run `make export`)")
    models: dict[str, Model] = {}
    for path in paths:
        model = Model.load(path, threads)
        if not _URL_SAFE.match(model.name):
            raise ModelLoadError(f"{path}: model name {model.name!r} is not URL-safe")
        if model.name in models:
            raise ModelLoadError(f"{path}: model name {model.name!r} also used by {models[model.name].path}")
        models[model.name] = model
    return models
