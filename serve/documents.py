"""The metadata documents of one model version, from its ONNX metadata: ours and the V2 protocol's."""

from __future__ import annotations

from typing import Any

import orjson

from serve.model import Model


def model(model: Model) -> dict[str, Any]:
    """Everything a caller may want to know about a model version."""
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
        # What the explain route's interval and baseline are, and the linear model's coefficient table; a file
        # exported before explanations has none of them.
        **{key: meta[key] for key in ("interval", "baseline", "coefficients") if key in meta},
    }


def v2_model(model: Model) -> dict[str, Any]:
    """Open Inference Protocol model metadata, but for `versions`, which the caller fills in; parameters
    carry features and training ranges (as strings: V2 parameter values are scalars)."""
    n = len(model.features)
    return {
        "name": model.name,
        "platform": "onnx_onnxv1",
        "inputs": [{"name": model.input_name, "datatype": "FP32", "shape": [-1, n]}],
        "outputs": [{"name": name, "datatype": "FP32", "shape": shape} for name, shape in model.output_shapes.items()],
        "parameters": {
            "description": model.description,
            "feature_names": ",".join(model.feature_names),
            "features_used": ",".join(f.name for f in model.features if f.used),
            "training_ranges": orjson.dumps({f.name: [f.minimum, f.maximum] for f in model.features}).decode(),
            "per_feature_inputs": f"also accepted: {n} inputs named by feature (or alias), FP32, shape [-1] or [-1, 1]",
            "feature_aliases": orjson.dumps({f.name: list(f.aliases) for f in model.features if f.aliases}).decode(),
        },
    }
