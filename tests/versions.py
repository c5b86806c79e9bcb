"""Model stores for lifecycle tests: copies of the committed versions, new versions that predict
differently (and say so in their golden predictions), and the broken files a store must refuse."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tests.conftest import MODEL_DIR

MODELS = ("linear", "mlp")


def store_copy(root: Path) -> Path:
    """A writable copy of the committed store (version 1 of each model)."""
    store = root / "store"
    shutil.copytree(MODEL_DIR, store)
    return store


def variant(name: str, version: int, shift: float, golden_shift: float | None = None) -> bytes:
    """Version 1 of `name` with `shift` added to every prediction, as version `version`; its golden
    outputs move by `golden_shift` (by default the same, so the file passes its self-test)."""
    model = onnx.load(MODEL_DIR / name / "1" / "model.onnx")
    graph = model.graph
    output = graph.output[0].name
    for node in graph.node:  # the old output becomes an intermediate value, the shift produces the output
        node.output[:] = [f"{output}_unshifted" if o == output else o for o in node.output]
    graph.initializer.append(numpy_helper.from_array(np.array([shift], np.float32), "shift"))
    graph.node.append(helper.make_node("Add", [f"{output}_unshifted", "shift"], [output]))
    meta = {p.key: p.value for p in model.metadata_props}
    golden = json.loads(meta["golden"])
    golden["outputs"] = [y + (shift if golden_shift is None else golden_shift) for y in golden["outputs"]]
    meta.update(model_version=str(version), golden=json.dumps(golden))
    del model.metadata_props[:]
    helper.set_model_props(model, meta)
    model.model_version = version
    return model.SerializeToString()


def without_metadata(name: str) -> bytes:
    model = onnx.load(MODEL_DIR / name / "1" / "model.onnx")
    del model.metadata_props[:]
    return model.SerializeToString()


def put(store: Path, name: str, version: int | str, content: bytes) -> Path:
    """Write `<store>/<name>/<version>/model.onnx` atomically, as export does."""
    directory = store / name / str(version)
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".model.")
    with os.fdopen(handle, "wb") as file:
        file.write(content)
    path = directory / "model.onnx"
    os.replace(temporary, path)
    return path


def remove(store: Path, name: str, version: int | str) -> None:
    shutil.rmtree(store / name / str(version))
