"""Exact interventional Shapley values of a network with one reference point, inside the ONNX graph.

For 13 features every coalition S can be evaluated: the network at the hybrid point that takes x's
values on S and the reference's elsewhere, 2^13 = 8,192 points per row. Then
phi_i = sum over S without i of |S|! (p - |S| - 1)! / p! * (f(S + i) - f(S)), a constant linear map of
the 8,192 values, and sum_i phi_i = f(x) - f(reference) exactly (completeness).
"""

from __future__ import annotations

from math import factorial

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from export.explain import Branch
from export.metrics import Array
from export.schema import FEATURE_NAMES, INPUT_NAME

FEATURES = len(FEATURE_NAMES)
# The export compares the graph's Shapley values with torch's on this many training and random rows each,
# not on all 10,506: ~3 ms a row in onnxruntime and ~25 ms in torch (MKL pinned to its compatible path).
PARITY_ROWS = 32
# Rows per native evaluation: 64 x 8,192 hybrid points keep torch's buffers at ~130 MB.
CHUNK_ROWS = 64


def coalitions(features: int = FEATURES) -> Array:
    """(2^p, p) booleans: row s holds the bits of s, feature j in the coalition when bit j is set."""
    return (np.arange(2**features)[:, None] >> np.arange(features)) & 1 == 1


def weights(features: int = FEATURES) -> Array:
    """(2^p, p): phi = f(coalitions) @ weights. Column i: +w(|S|-1) where i is in S, -w(|S|) where not."""
    member = coalitions(features)
    size = member.sum(axis=1)
    weight = np.array([factorial(k) * factorial(features - k - 1) / factorial(features) for k in range(features)]
                      + [0.0])
    return np.where(member, weight[np.maximum(size - 1, 0)][:, None], -weight[size][:, None])


def native(module: nn.Module, reference: Array, rows: Array) -> Array:
    """(n, p) Shapley values with torch: the module on every hybrid point, combined in float64."""
    member, combine = coalitions(), weights()
    values = []
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[start:start + CHUNK_ROWS]
        points = np.where(member[None], chunk[:, None, :], reference[None, None, :]).reshape(-1, FEATURES)
        with torch.inference_mode():
            f = module(torch.tensor(points, dtype=torch.float32)).numpy().astype(np.float64)
        values.append(f.reshape(len(chunk), -1) @ combine)
    return np.concatenate(values) if values else np.zeros((0, FEATURES))


def branch(layers: list[tuple[Array, Array]], reference: Array, output: str) -> Branch:
    """A Scan over the rows computing `output` [batch, 13]: per row the 8,192 hybrid points (Where,
    exact), the ReLU network given as (weight, bias) per Linear layer, then the weight matrix.

    The coalitions and weights are built by the graph from 13 powers of two and 14 weights (when explaining
    only): as constants they would be ~0.5 MB, five times the rest of the file."""
    table = [factorial(k) * factorial(FEATURES - k - 1) / factorial(FEATURES) for k in range(FEATURES)] + [0.0]
    constants = {
        "shapley_subset_count": np.array(2**FEATURES, np.int64), "shapley_zero": np.array(0, np.int64),
        "shapley_one": np.array(1, np.int64), "shapley_powers": 2 ** np.arange(FEATURES, dtype=np.int64),
        "shapley_axis": np.array([1], np.int64), "shapley_table": np.array(table, np.float32),
        "shapley_reference": reference.astype(np.float32),
    }
    prepare = [
        # coalitions[s, j] = bit j of s; size[s] = |S|
        helper.make_node("Range", ["shapley_zero", "shapley_subset_count", "shapley_one"], ["shapley_subsets"]),
        helper.make_node("Unsqueeze", ["shapley_subsets", "shapley_axis"], ["shapley_subset_column"]),
        helper.make_node("BitwiseAnd", ["shapley_subset_column", "shapley_powers"], ["shapley_bits"]),
        helper.make_node("Greater", ["shapley_bits", "shapley_zero"], ["shapley_coalitions"]),
        helper.make_node("Cast", ["shapley_coalitions"], ["shapley_members"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["shapley_members", "shapley_axis"], ["shapley_size"], keepdims=1),
        helper.make_node("Sub", ["shapley_size", "shapley_one"], ["shapley_size_without"]),
        # weights[s, j] = w(|S| - 1) where j is in S, -w(|S|) where not (index -1 only where j is not)
        helper.make_node("Gather", ["shapley_table", "shapley_size_without"], ["shapley_gain"]),
        helper.make_node("Gather", ["shapley_table", "shapley_size"], ["shapley_loss"]),
        helper.make_node("Neg", ["shapley_loss"], ["shapley_negative_loss"]),
        helper.make_node("Where", ["shapley_coalitions", "shapley_gain", "shapley_negative_loss"], ["shapley_weights"]),
    ]
    body = [helper.make_node("Where", ["shapley_coalitions", "shapley_row", "shapley_reference"], ["shapley_hybrid_0"])]
    last = len(layers) - 1
    for number, (weight, bias) in enumerate(layers):
        constants[f"shapley_weight_{number}"], constants[f"shapley_bias_{number}"] = weight, bias
        body.append(helper.make_node(
            "Gemm", [f"shapley_hybrid_{number}", f"shapley_weight_{number}", f"shapley_bias_{number}"],
            [f"shapley_linear_{number}"], transB=1))
        if number < last:
            body.append(helper.make_node("Relu", [f"shapley_linear_{number}"], [f"shapley_hybrid_{number + 1}"]))
    body += [
        helper.make_node("Gemm", [f"shapley_linear_{last}", "shapley_weights"], ["shapley_phi_row"], transA=1),
        helper.make_node("Squeeze", ["shapley_phi_row"], ["shapley_phi"]),
    ]
    scan_body = helper.make_graph(
        body, "shapley_row", [helper.make_tensor_value_info("shapley_row", TensorProto.FLOAT, [FEATURES])],
        [helper.make_tensor_value_info("shapley_phi", TensorProto.FLOAT, [FEATURES])])
    scan = helper.make_node("Scan", [INPUT_NAME], [output], body=scan_body, num_scan_inputs=1)
    return Branch([*prepare, scan], [
        numpy_helper.from_array(value if value.dtype == np.int64 else value.astype(np.float32), name)
        for name, value in constants.items()])


def layers(module: nn.Sequential) -> list[tuple[Array, Array]]:
    """(weight, bias) of each Linear of a ReLU network, in order."""
    return [(layer.weight.detach().numpy(), layer.bias.detach().numpy())
            for layer in module if isinstance(layer, nn.Linear)]
