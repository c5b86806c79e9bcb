"""The export proper: build and check both models, then write every file (none if anything failed)."""

from __future__ import annotations

from pathlib import Path

from export import build, card, files
from export.data import Dataset


def export(dataset: Dataset, out: Path) -> list[build.Exported]:
    models = build.both(dataset)
    files.write_all(out, {name: content for model in models for name, content in _files(model).items()})
    return models


def _files(model: build.Exported) -> dict[str, bytes]:
    return {
        f"{model.name}.onnx": model.model.SerializeToString(),
        f"{model.name}.md": card.render(model).encode(),
        f"{model.name}.png": card.plot(model),
    }
