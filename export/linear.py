"""The workshop's GLM: standardize 8 features, ordinary least squares; converted by skl2onnx, then folded."""

from __future__ import annotations

from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from export.errors import ExportError
from export.explain import Branch, Explain, Explanation, computed
from export.metrics import Array
from export.ols import Ols, interval
from export.schema import (
    CONTRIBUTIONS_NAME,
    FEATURE_NAMES,
    INPUT_NAME,
    INTERVAL_LEVEL,
    LINEAR_FEATURES,
    LOWER_NAME,
    OUTPUT_NAME,
    TARGET,
    UPPER_NAME,
)

FORMULA = f"{TARGET.name} ~ {' + '.join(LINEAR_FEATURES)}"
COLUMNS = [FEATURE_NAMES.index(name) for name in LINEAR_FEATURES]
OPSET = 20
IR_VERSION = 10  # what torch's exporter writes too; onnxruntime >= 1.16 reads it


def fit(features: Array, target: Array) -> Pipeline:
    """The pipeline takes all 13 raw features and uses its 8, like the ONNX graph."""
    select_and_scale = ColumnTransformer([("scale", StandardScaler(), COLUMNS)])
    return Pipeline([("scale", select_and_scale), ("regress", LinearRegression())]).fit(features, target)


def convert(pipeline: Pipeline, standard_ops: bool = False) -> onnx.ModelProto:
    """skl2onnx's graph (output named by skl2onnx); by default ai.onnx.ml ArrayFeatureExtractor -> Scaler
    -> LinearRegressor, with `standard_ops` ArrayFeatureExtractor -> Sub -> Div -> MatMul -> Add -> Reshape."""
    options = {StandardScaler: {"div": "div"}} if standard_ops else None
    return to_onnx(
        pipeline,
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(FEATURE_NAMES)]))],
        options=options,
        black_op={"LinearRegressor"} if standard_ops else None,
    )


def fold(converted: onnx.ModelProto, op: Literal["Gemm", "MatMul"] = "Gemm") -> onnx.ModelProto:
    """One affine map `features @ w + b` with skl2onnx's constants, so onnxruntime runs a single GEMM.

    ((x[:, columns] - offset) * scale) @ coefficients + intercept
      == x @ w + b  with  w[columns] = scale * coefficients (0 elsewhere),  b = intercept - offset @ w[columns]
    """
    nodes = {node.op_type: node for node in converted.graph.node}
    if sorted(nodes) != ["ArrayFeatureExtractor", "LinearRegressor", "Scaler"]:
        raise ExportError(f"linear: unexpected skl2onnx graph {sorted(nodes)}; update export/linear.py:fold")
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in converted.graph.initializer}
    columns = initializers[nodes["ArrayFeatureExtractor"].input[1]].ravel()
    scaler = _attributes(nodes["Scaler"])
    regressor = _attributes(nodes["LinearRegressor"])
    used = np.asarray(scaler["scale"], np.float64) * np.asarray(regressor["coefficients"], np.float64)
    weights = np.zeros(len(FEATURE_NAMES))
    weights[columns] = used
    bias = float(regressor["intercepts"][0]) - float(np.dot(scaler["offset"], used))
    return affine(weights, bias, op)


def affine(weights: Array, bias: float, op: Literal["Gemm", "MatMul"] = "Gemm") -> onnx.ModelProto:
    w = numpy_helper.from_array(weights.reshape(-1, 1).astype(np.float32), "weights")
    b = numpy_helper.from_array(np.array([bias], dtype=np.float32), "bias")
    if op == "Gemm":
        nodes = [helper.make_node("Gemm", [INPUT_NAME, "weights", "bias"], [OUTPUT_NAME])]
    else:
        nodes = [
            helper.make_node("MatMul", [INPUT_NAME, "weights"], ["product"]),
            helper.make_node("Add", ["product", "bias"], [OUTPUT_NAME]),
        ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", len(FEATURE_NAMES)])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 1])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def explanation(ols: Ols) -> Branch:
    """The exact OLS prediction interval and the contributions coefficient * (x - mean), on the raw features.

    x0' (X'X)^-1 x0 = 1/n + d' M d with d = x - mean and M = (Xc'Xc)^-1 (the intercept block decouples once
    the columns are centered); with M = L L' (Cholesky, in float64) the graph computes |d L|^2, a sum of
    squares, which float32 keeps accurate to ~1e-7 relative instead of cancelling terms of a quadratic form.
    """
    mean, weights, factor = np.zeros(len(FEATURE_NAMES)), np.zeros(len(FEATURE_NAMES)), np.zeros(
        (len(FEATURE_NAMES), len(COLUMNS)))
    mean[COLUMNS], weights[COLUMNS] = ols.mean, ols.coefficients
    factor[COLUMNS] = np.linalg.cholesky(ols.centered_inverse)
    constants = {
        "feature_means": mean, "contribution_weights": weights, "leverage_factor": factor,
        "leverage_offset": np.array([1 + 1 / ols.rows]),
        "half_width_scale": np.array([ols.t(INTERVAL_LEVEL) * ols.sigma]), "sum_axis": np.array([1], np.int64),
    }
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "feature_means"], ["centered"]),
        helper.make_node("Mul", ["centered", "contribution_weights"], [computed(CONTRIBUTIONS_NAME)]),
        helper.make_node("MatMul", ["centered", "leverage_factor"], ["projected"]),
        helper.make_node("ReduceSumSquare", ["projected", "sum_axis"], ["leverage"], keepdims=1),
        helper.make_node("Add", ["leverage", "leverage_offset"], ["spread"]),
        helper.make_node("Sqrt", ["spread"], ["root"]),
        helper.make_node("Mul", ["root", "half_width_scale"], ["half_width"]),
        helper.make_node("Sub", [OUTPUT_NAME, "half_width"], [computed(LOWER_NAME)]),
        helper.make_node("Add", [OUTPUT_NAME, "half_width"], [computed(UPPER_NAME)]),
    ]
    return Branch(nodes, [
        numpy_helper.from_array(value if value.dtype == np.int64 else value.astype(np.float32), name)
        for name, value in constants.items()])


def explain(ols: Ols) -> Explain:
    """The same in float64 with the textbook formula: the full (X'X)^-1 of the design with its intercept."""

    def native(features: Array) -> Explanation:
        used = features[:, COLUMNS]
        contributions = np.zeros(features.shape)
        contributions[:, COLUMNS] = (used - ols.mean) * ols.coefficients
        return Explanation(*interval(ols, used, INTERVAL_LEVEL), contributions)

    return native


def _attributes(node: onnx.NodeProto) -> dict[str, list[float]]:
    return {attribute.name: list(helper.get_attribute_value(attribute)) for attribute in node.attribute}
