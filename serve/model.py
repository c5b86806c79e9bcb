"""One served model: an onnxruntime session plus the schema its ONNX metadata carries."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from difflib import get_close_matches
from operator import le
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from serve import drift
from serve.errors import MAX_NAME_CHARS, ModelLoadError
from serve.ranges import RangeCheck

# The keys export writes into the ONNX metadata_props: the whole contract between export and serve.
REQUIRED_METADATA = (
    "model_name", "model_version", "description", "feature_names", "features_used",
    "features", "target", "metrics", "data_sha256", "training_environment", "golden",
)
JSON_METADATA = ("feature_names", "features_used", "features", "target", "metrics", "training_environment",
                 "hyperparameters", "golden", drift.REFERENCE_KEY, "interval", "baseline", "coefficients")
# The graph's outputs after MEDV that explain it, in this order; the metadata 'interval', 'baseline',
# 'explain_input' and the golden 'extra_outputs' come with them. A file from before them has MEDV alone: it
# predicts, and explains nothing. They are computed only when a call feeds the boolean input that
# 'explain_input' names as True (a scalar defaulting to False): onnxruntime runs every node whatever is fetched,
# so without that gate every prediction would pay for them.
EXPLANATION_OUTPUTS = ("MEDV_lower", "MEDV_upper", "contributions")
# An entry without "aliases" is refused like one without "unit", not read as having none: the metadata is
# the contract, and a model from an older export would otherwise refuse, alone, the names the others accept.
FEATURE_KEYS = ("name", "description", "unit", "aliases", "min", "max", "mean", "std")


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    unit: str
    aliases: tuple[str, ...]
    minimum: float
    maximum: float
    mean: float
    std: float
    used: bool


class Model:
    """Holds the session and the schema; `predict` maps an (N, n_features) float32 array to N values."""

    def __init__(self, path: Path, session: ort.InferenceSession, metadata: dict[str, Any]):
        self.path = path
        self.name: str = metadata["model_name"]
        self.version: str = metadata["model_version"]
        self.description: str = metadata["description"]
        self.metadata = metadata
        used = set(metadata["features_used"])
        self.features = tuple(
            Feature(f["name"], f["description"], f["unit"], tuple(f["aliases"]), float(f["min"]), float(f["max"]),
                    float(f["mean"]), float(f["std"]), f["name"] in used)
            for f in metadata["features"]
        )
        self.feature_names = tuple(f.name for f in self.features)
        self.drift_reference = drift.reference(path, metadata, self.features)
        published = [(i, spelling) for i, f in enumerate(self.features) for spelling in (f.name, *f.aliases)]
        # Every name and alias a request may use, lower-cased (they are case-insensitive) -> feature index.
        self.index = {spelling.lower(): i for i, spelling in published}
        self._published = {spelling.lower(): spelling for _, spelling in published}
        # Ranges compared in float32, the precision the input arrives in (0.385 must not fall below 0.385).
        self.lower = np.array([f.minimum for f in self.features], dtype=np.float32)
        self.upper = np.array([f.maximum for f in self.features], dtype=np.float32)
        self._lower_list, self._upper_list = self.lower.tolist(), self.upper.tolist()
        self.range = RangeCheck(self.lower, self.upper)
        self._session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self._outputs = [self.output_name]
        # Every output by name with its shape (-1 for the batch), as the V2 metadata lists them.
        self.output_shapes = {o.name: [d if type(d) is int else -1 for d in o.shape] for o in session.get_outputs()}
        self.explainable = len(self.output_shapes) > 1
        self._all_outputs = list(self.output_shapes)
        self._explain_feed = {metadata["explain_input"]: np.array(True)} if "explain_input" in metadata else {}
        # InferenceSession.run re-validates names and types and builds default RunOptions on every
        # call; the signature is checked at start-up, so the hot path calls the C++ session directly
        # with options made once (4.3 -> 3.4 us per single-row call, measured).
        self._run = session._sess.run
        self._run_options = ort.RunOptions()

    @classmethod
    def load(cls, path: Path, threads: int = 1) -> Model:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Errors only: onnxruntime warns at every load that the explanation gate, an initializer a call may
        # override, "will not be treated as constant", which is the point of it.
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated types for unreadable files
            raise ModelLoadError(f"{path}: not a loadable ONNX model ({exc})") from exc
        model = cls(path, session, _read_metadata(path, session))
        model._check_signature()
        model.warm_up()
        model._check_golden()
        return model

    def release(self) -> None:
        """Free the session of a version that no longer serves; it must not predict afterwards."""
        del self._run, self._session

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions for the rows of `x`, shape (N,)."""
        y: np.ndarray = self._run(self._outputs, {self.input_name: x}, self._run_options)[0]
        return y.reshape(-1)

    def explain(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the graph for the rows of `x`, by name (MEDV as (N, 1)); only `predict` is the hot path."""
        feed = {self.input_name: x, **self._explain_feed}
        return dict(zip(self._all_outputs, self._run(self._all_outputs, feed, self._run_options)))

    def prediction(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """MEDV from `predict` or `explain` as (N,), NaN in the rows where any output is not finite: unusable rows."""
        y = outputs[self.output_name].reshape(-1)
        if len(outputs) == 1:
            return y
        return np.where(np.isfinite(np.hstack(list(outputs.values()))).all(axis=1), y, np.nan)

    @property
    def interval_level(self) -> float:
        return float(self.metadata["interval"]["level"])

    @property
    def baseline(self) -> float:
        return float(self.metadata["baseline"]["value"])

    def out_of_range(self, x: np.ndarray) -> list[tuple[int, int]]:
        """(row, feature) pairs whose value lies outside the training range."""
        if len(x) == 1:  # plain Python beats three numpy calls on 13 values; C-level maps for the usual "none"
            row, lower, upper = x[0].tolist(), self._lower_list, self._upper_list
            if all(map(le, lower, row)) and all(map(le, row, upper)):
                return []
            return [(0, j) for j, (v, lo, hi) in enumerate(zip(row, lower, upper)) if v < lo or v > hi]
        mask = self.range.outside(x)
        if mask is None:
            return []
        rows, columns = np.nonzero(mask)
        return list(zip(rows.tolist(), columns.tolist()))

    def warnings(self, x: np.ndarray, with_record: bool) -> list[dict[str, Any]]:
        """One warning per value outside the training range, for the caller to hear about."""
        found = []
        for row, column in self.out_of_range(x):
            feature = self.features[column]
            value = float(str(x[row, column]))  # the float32's shortest repr: 0.11, not 0.10999999940395355
            found.append({
                **({"record": row} if with_record else {}),
                "feature": feature.name, "value": value, "min": feature.minimum, "max": feature.maximum,
                "used_by_model": feature.used,
                "message": f"{feature.name}={value:g} is outside the training range "
                           f"[{feature.minimum:g}, {feature.maximum:g}]",
            })
        return found

    @staticmethod
    def non_finite(y: np.ndarray) -> list[int]:
        """Rows whose prediction is NaN or infinite (inputs far beyond anything seen in training)."""
        if math.isfinite(float(y[0])) if len(y) == 1 else np.isfinite(y).all():
            return []
        rows: list[int] = np.flatnonzero(~np.isfinite(y)).tolist()
        return rows

    def closest(self, key: str) -> str | None:
        """The name or alias an unknown key most resembles, for a did-you-mean hint; None if none is close."""
        if len(key) > MAX_NAME_CHARS:  # too long to be close to any name, and difflib's time grows with it
            return None
        matches = get_close_matches(key.lower(), self._published, n=1)
        return self._published[matches[0]] if matches else None

    def warm_up(self) -> None:
        """Run the graph once so the first request does not pay for lazy initialisation."""
        means = np.array([[f.mean for f in self.features]] * 2, dtype=np.float32)
        y = self.predict(means)
        if y.shape != (2,) or not np.isfinite(y).all():
            raise ModelLoadError(f"{self.path}: warm-up on the training means gave {y!r}, expected 2 finite values")

    def _check_golden(self) -> None:
        """Reproduce the predictions export recorded: a changed file, model or onnxruntime shows here."""
        golden = self.metadata["golden"]
        try:
            x = np.array(golden["inputs"], dtype=np.float32)
            expected = np.array(golden["outputs"], dtype=np.float64)
            tolerance = float(golden["tolerance"])
            if x.ndim != 2 or x.shape[1] != len(self.features) or expected.shape != (len(x),) or not len(x):
                raise ValueError(f"{len(x)} input rows and {expected.size} outputs")
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{self.path}: metadata 'golden' needs inputs [k, {len(self.features)}], "
                                 f"k outputs and a tolerance ({exc})") from exc
        self._compare_golden(self.output_name, self.predict(x), expected, tolerance)
        if not self.explainable:
            return
        n = len(self.features)
        try:
            extra = {name: np.array(golden["extra_outputs"][name], dtype=np.float64) for name in EXPLANATION_OUTPUTS}
            if [a.shape for a in extra.values()] != [(len(x),), (len(x),), (len(x), n)]:
                raise ValueError(f"shapes {[a.shape for a in extra.values()]}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{self.path}: metadata 'golden' needs extra_outputs MEDV_lower [k], MEDV_upper [k] "
                                 f"and contributions [k, {n}] for its {len(x)} inputs ({exc})") from exc
        outputs = self.explain(x)
        for name, values in extra.items():
            self._compare_golden(name, outputs[name].reshape(values.shape), values, tolerance)

    def _compare_golden(self, name: str, got: np.ndarray, expected: np.ndarray, tolerance: float) -> None:
        difference = np.abs(got.astype(np.float64) - expected)
        if not difference.max() <= tolerance:  # also catches NaN
            at = np.unravel_index(int(np.nanargmax(difference)) if np.isfinite(difference).any() else 0, got.shape)
            where = f"row {at[0]}" + (f", feature {self.feature_names[at[1]]}" if len(at) > 1 else "") + (
                "" if name == self.output_name else f" of {name}")
            raise ModelLoadError(
                f"{self.path}: does not reproduce its golden predictions: {where} gives "
                f"{got[at]:.6g}, expected {expected[at]:.6g} (tolerance {tolerance:g})")

    def _check_signature(self) -> None:
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        n = len(self.features)
        if len(inputs) != 1 or inputs[0].type != "tensor(float)" or inputs[0].shape[1:] != [n]:
            raise ModelLoadError(
                f"{self.path}: expected one float tensor input of shape [batch, {n}], "
                f"found {[(i.name, i.type, i.shape) for i in inputs]}"
            )
        names, shapes = [o.name for o in outputs], [o.shape[1:] for o in outputs]
        explained = [*names[:1], *EXPLANATION_OUTPUTS]
        if not (len(outputs) == 1 or names == explained) or shapes != [[1], [1], [1], [n]][:len(outputs)] \
                or any(o.type != "tensor(float)" for o in outputs):
            raise ModelLoadError(f"{self.path}: expected one float output of shape [batch, 1], or the outputs "
                                 f"{', '.join(explained)} of shapes [batch, 1] x 3 and [batch, {n}]; found "
                                 f"{[(o.name, o.type, o.shape) for o in outputs]}")
        if self.explainable:
            try:
                level, baseline = self.interval_level, self.baseline
                gate = self.metadata["explain_input"]
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelLoadError(f"{self.path}: a model with explanation outputs needs the metadata 'interval' "
                                     "(with a level), 'baseline' (with a value) and 'explain_input'") from exc
            gates = [(i.name, i.type, i.shape) for i in self._session.get_overridable_initializers()]
            if (gate, "tensor(bool)", []) not in gates:
                raise ModelLoadError(f"{self.path}: metadata 'explain_input' names {gate!r}, but the graph has no "
                                     f"such boolean scalar input with a default (it has {gates})")
            if not (0 < level < 1 and math.isfinite(baseline)):
                raise ModelLoadError(f"{self.path}: metadata interval level {level!r} is not in (0, 1) or "
                                     f"baseline {baseline!r} is not finite")
        if list(self.feature_names) != list(self.metadata["feature_names"]):
            raise ModelLoadError(f"{self.path}: metadata 'features' and 'feature_names' disagree")


def _read_metadata(path: Path, session: ort.InferenceSession) -> dict[str, Any]:
    raw = session.get_modelmeta().custom_metadata_map
    missing = [key for key in REQUIRED_METADATA if key not in raw]
    if missing:
        raise ModelLoadError(f"{path}: ONNX metadata lacks {', '.join(missing)} (was it written by `make export`?)")
    metadata: dict[str, Any] = dict(raw)
    for key in JSON_METADATA:
        if key in metadata:
            try:
                metadata[key] = json.loads(metadata[key])
            except json.JSONDecodeError as exc:
                raise ModelLoadError(f"{path}: metadata {key!r} is not valid JSON ({exc})") from exc
    try:
        for feature in metadata["features"]:
            for key in FEATURE_KEYS:
                feature[key]
    except (KeyError, TypeError) as exc:
        raise ModelLoadError(f"{path}: metadata 'features' entries need {', '.join(FEATURE_KEYS)}") from exc
    _check_spellings(path, metadata["features"])
    return metadata


def _check_spellings(path: Path, features: list[dict[str, Any]]) -> None:
    """Names and aliases are strings, and each (case-insensitively) names one feature only."""
    spellings: list[str] = []
    for feature in features:
        aliases = feature["aliases"]
        if type(aliases) is not list or not all(type(s) is str for s in (feature["name"], *aliases)):
            raise ModelLoadError(f"{path}: metadata 'features': name and aliases of {feature['name']!r} "
                                 "must be a string and a list of strings")
        spellings += [spelling.lower() for spelling in (feature["name"], *aliases)]
    repeated = sorted({spelling for spelling in spellings if spellings.count(spelling) > 1})
    if repeated:
        raise ModelLoadError(f"{path}: metadata 'features': {', '.join(repeated)} would name more than one feature "
                             "(names and aliases are case-insensitive)")
