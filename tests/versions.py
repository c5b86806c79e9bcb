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
import onnx.utils
import onnxruntime as ort
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
    if "extra_outputs" in golden:  # the outputs computed from MEDV move with it: their golden values are the variant's
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = list(golden["extra_outputs"])
        feed = {"features": np.array(golden["inputs"], np.float32), meta["explain_input"]: np.array(True)}
        values = session.run(names, feed)
        golden["extra_outputs"] = {name: (v.reshape(-1) if v.shape[1] == 1 else v).tolist()
                                   for name, v in zip(names, values)}
    return _with_metadata(model, {**meta, "model_version": str(version), "golden": json.dumps(golden)}, version)


def without_explanations(name: str) -> bytes:
    """Version 1 of `name` as an export from before explanations wrote it: MEDV the one output, no gate, interval,
    baseline, coefficients or golden extra outputs."""
    model = onnx.load(MODEL_DIR / name / "1" / "model.onnx")
    meta = {p.key: p.value for p in model.metadata_props}
    # The graph that computes MEDV alone (the extractor keeps no metadata: it is set again below).
    model = onnx.utils.Extractor(model).extract_model([model.graph.input[0].name], [model.graph.output[0].name])
    golden = json.loads(meta["golden"])
    golden.pop("extra_outputs", None)
    meta = {key: value for key, value in meta.items()
            if key not in ("interval", "baseline", "coefficients", "explain_input")}
    return _with_metadata(model, {**meta, "golden": json.dumps(golden)}, int(meta["model_version"]))


def _with_metadata(model: onnx.ModelProto, meta: dict[str, str], version: int) -> bytes:
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
