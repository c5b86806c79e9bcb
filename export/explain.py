"""The explanation outputs both graphs carry beside MEDV, behind one gate.

The contract with serve (outputs in this order, all float32):
- `MEDV` [batch, 1]: the prediction, computed exactly as before;
- `MEDV_lower`, `MEDV_upper` [batch, 1]: the bounds of the prediction interval (level, method, measured
  coverage and mean width in the metadata key `interval`);
- `contributions` [batch, 13], columns in `feature_names` order: each feature's share of
  `MEDV - baseline`, the baseline (and what it is) in the metadata key `baseline`; they sum to it.
The three explanation outputs are computed only when the call feeds the optional boolean scalar input
`explain` (metadata `explain_input`) as True; by default it is False and they come back with 0 rows.
onnxruntime runs every node of a graph whatever outputs are asked for, so without the gate a MEDV-only
call would pay for the explanations: for the MLP, 8,192 network evaluations per row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.metrics import Array
from export.schema import (
    CONTRIBUTIONS_NAME,
    EXPLAIN_NAME,
    EXPLANATION_NAMES,
    FEATURE_NAMES,
    LOWER_NAME,
    UPPER_NAME,
)

WIDTHS = {LOWER_NAME: 1, UPPER_NAME: 1, CONTRIBUTIONS_NAME: len(FEATURE_NAMES)}


@dataclass(frozen=True)
class Explanation:
    """What a native model computes for the explanation outputs, row by row."""

    lower: Array  # (n,)
    upper: Array  # (n,)
    contributions: Array  # (n, 13)

    def outputs(self) -> dict[str, Array]:
        return {LOWER_NAME: self.lower.reshape(-1, 1), UPPER_NAME: self.upper.reshape(-1, 1),
                CONTRIBUTIONS_NAME: self.contributions}


Explain = Callable[[Array], Explanation]


@dataclass(frozen=True)
class Branch:
    """Nodes computing `computed(name)` for each explanation output from the graph's input and MEDV."""

    nodes: list[onnx.NodeProto]
    constants: list[onnx.TensorProto]


def computed(name: str) -> str:
    """The name a branch gives the value that becomes output `name`."""
    return f"{name}_computed"


def attach(model: onnx.ModelProto, branch: Branch, gated: bool = True) -> onnx.ModelProto:
    """A copy of `model` with the gate input, the gated branch and the three outputs after MEDV; with
    `gated` False (only for `python -m export.graph_forms`) the branch's nodes run on every call."""
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    graph = extended.graph
    graph.initializer.extend(branch.constants)
    graph.output.extend(_value(name, name) for name in EXPLANATION_NAMES)
    if not gated:
        graph.node.extend([*branch.nodes, *(helper.make_node("Identity", [computed(name)], [name])
                                            for name in EXPLANATION_NAMES)])
        return extended
    graph.initializer.append(numpy_helper.from_array(np.array(False), EXPLAIN_NAME))
    # An initializer that is also a graph input is an input with a default (onnxruntime lists it under
    # get_overridable_initializers, not get_inputs), so a call with only the features stays valid.
    graph.input.append(helper.make_tensor_value_info(EXPLAIN_NAME, TensorProto.BOOL, []))
    explained = helper.make_graph(
        branch.nodes, "explained", [], [_value(computed(name), name) for name in EXPLANATION_NAMES])
    skipped = helper.make_graph(
        [helper.make_node("Constant", [], [f"{name}_skipped"], value=numpy_helper.from_array(
            np.zeros((0, width), np.float32))) for name, width in WIDTHS.items()],
        "skipped", [], [_value(f"{name}_skipped", name) for name in EXPLANATION_NAMES])
    graph.node.append(helper.make_node(
        "If", [EXPLAIN_NAME], list(EXPLANATION_NAMES), then_branch=explained, else_branch=skipped))
    return extended


def _value(name: str, output: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", WIDTHS[output]])
