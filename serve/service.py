"""What the service builds once at start-up: models, codecs, metrics, documents. Knows nothing of HTTP."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from serve import openapi, page
from serve.batching import Coalescer
from serve.codec import RecordCodec
from serve.errors import ServeError
from serve.metrics import Metrics
from serve.model import Model
from serve.registry import load_models
from serve.settings import Settings
from serve.v2 import V2Codec

logger = logging.getLogger("serve")


@dataclass
class Service:
    settings: Settings
    routes: list[str]
    models: dict[str, Model] = field(default_factory=dict)
    codecs: dict[str, RecordCodec] = field(default_factory=dict)
    v2_codecs: dict[str, V2Codec] = field(default_factory=dict)
    coalescers: dict[str, Coalescer] = field(default_factory=dict)
    metadata: dict[str, bytes] = field(default_factory=dict)
    v2_metadata: dict[str, bytes] = field(default_factory=dict)
    metrics: Metrics | None = None
    openapi: bytes = b""
    page: str = ""
    ready: bool = False

    def start(self) -> None:
        """Load and warm every model, then build everything requests will only read."""
        self.models = load_models(self.settings.model_dir, self.settings.ort_threads)
        for model in self.models.values():
            logger.info("loaded model %s version %s from %s", model.name, model.version, model.path)
        self.codecs = {name: RecordCodec(m, self.settings.max_batch) for name, m in self.models.items()}
        self.coalescers = {name: Coalescer(m, self.settings.coalesce_rows) for name, m in self.models.items()}
        self.v2_codecs = {name: V2Codec(m, self.settings.max_batch) for name, m in self.models.items()}
        self.metadata = {name: orjson.dumps(model_document(m)) for name, m in self.models.items()}
        self.v2_metadata = {name: orjson.dumps(v2_model_document(m)) for name, m in self.models.items()}
        self.metrics = Metrics(self.routes, list(self.models), self.settings.metrics_dir)
        auth = bool(self.settings.auth_token)
        self.openapi = orjson.dumps(openapi.document(self.models, self.settings.max_batch, auth))
        self.page = page.render(self.models, auth)
        self.ready = True
        logger.info("ready: %d model(s)", len(self.models))

    def model(self, name: str, version: str | None = None) -> Model:
        model = self.models.get(name)
        if model is None:
            raise ServeError(404, f"unknown model {name!r}; available: {', '.join(self.models)}",
                             models=list(self.models))
        if version is not None and version != model.version:
            raise ServeError(404, f"model {name!r} has no version {version!r}; available: {model.version}")
        return model


def model_document(model: Model) -> dict[str, Any]:
    """Everything a caller may want to know about a model, from its ONNX metadata."""
    meta = model.metadata
    return {
        "name": model.name,
        "version": model.version,
        "description": model.description,
        "input": {"name": model.input_name, "datatype": "FP32", "shape": [-1, len(model.features)]},
        "output": {"name": model.output_name, "datatype": "FP32", "shape": [-1, 1], **meta["target"]},
        "features": [
            {"name": f.name, "aliases": list(f.aliases), "description": f.description, "unit": f.unit,
             "min": f.minimum, "max": f.maximum, "mean": f.mean, "std": f.std, "used_by_model": f.used}
            for f in model.features
        ],
        "metrics": meta["metrics"],
        "hyperparameters": meta.get("hyperparameters", {}),
        "training_data_sha256": meta["data_sha256"],
        "training_environment": meta["training_environment"],
    }


def v2_model_document(model: Model) -> dict[str, Any]:
    """Open Inference Protocol model metadata; parameters carry features and training ranges
    (as strings: V2 parameter values are scalars)."""
    n = len(model.features)
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "onnx_onnxv1",
        "inputs": [{"name": model.input_name, "datatype": "FP32", "shape": [-1, n]}],
        "outputs": [{"name": model.output_name, "datatype": "FP32", "shape": [-1, 1]}],
        "parameters": {
            "description": model.description,
            "feature_names": ",".join(model.feature_names),
            "features_used": ",".join(f.name for f in model.features if f.used),
            "training_ranges": orjson.dumps({f.name: [f.minimum, f.maximum] for f in model.features}).decode(),
            "per_feature_inputs": f"also accepted: {n} inputs named by feature (or alias), FP32, shape [-1] or [-1, 1]",
            "feature_aliases": orjson.dumps({f.name: list(f.aliases) for f in model.features if f.aliases}).decode(),
        },
    }
