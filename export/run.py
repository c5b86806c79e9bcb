"""The export proper: build and check both models, then write each as a new version in the model store.

The store's layout is Triton's and KServe's: `<out>/<name>/<version>/model.onnx`, with the model card
and its plot beside it. A version, once written, is never overwritten: serving may be reading it.
"""

from __future__ import annotations

from pathlib import Path

from export import build, card, files
from export.data import Dataset
from export.errors import ExportError

MODEL_FILE = "model.onnx"


def export(dataset: Dataset, out: Path, version: int | None = None) -> list[build.Exported]:
    """Both models as `version`, or each as the next version after the newest in `out`."""
    versions = {name: _new_version(out / name, version) for name in build.NAMES}
    models = build.both(dataset, versions)
    files.write_versions(out, {(model.name, versions[model.name]): _files(model) for model in models})
    return models


def _new_version(model_dir: Path, requested: int | None) -> int:
    if requested is not None:
        if requested < 1:
            raise ExportError(f"--version must be a positive integer, got {requested}")
        if (model_dir / str(requested)).exists():
            raise ExportError(f"{model_dir / str(requested)} exists: a version is never overwritten; "
                              "choose another --version or leave it out for the next one")
        return requested
    existing = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()] if model_dir.is_dir() else []
    return max(existing, default=0) + 1


def _files(model: build.Exported) -> dict[str, bytes]:
    # The model file last: a watching server then never finds a version without its card.
    return {
        "model.md": card.render(model).encode(),
        "model.png": card.plot(model),
        MODEL_FILE: model.model.SerializeToString(),
    }
