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
from export.metrics import Array
from export.schema import FEATURE_NAMES, INPUT_NAME, LINEAR_FEATURES, OUTPUT_NAME, TARGET

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


def _attributes(node: onnx.NodeProto) -> dict[str, list[float]]:
    return {attribute.name: list(helper.get_attribute_value(attribute)) for attribute in node.attribute}
