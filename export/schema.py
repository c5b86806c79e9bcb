"""The one place that names the data: features, their meaning and unit, the target, each model's inputs.

Everything downstream (the ONNX metadata, the service, its OpenAPI document and landing page)
is derived from these definitions; no other module lists features.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    description: str
    unit: str
    # Other names the column is published under; requests may use them instead of `name`.
    aliases: tuple[str, ...] = ()


FEATURES: tuple[Column, ...] = (
    Column("CRIM", "per-capita crime rate by town", "crimes per capita"),
    Column("ZN", "share of residential land zoned for lots over 25,000 sq ft", "%"),
    Column("INDUS", "share of non-retail business acres per town", "%"),
    Column("CHAS", "Charles River dummy: 1 if the tract bounds the river, else 0", "0/1"),
    Column("NOX", "nitric oxides concentration", "parts per 10 million"),
    Column("RM", "average number of rooms per dwelling", "rooms"),
    Column("AGE", "share of owner-occupied units built before 1940", "%"),
    Column("DIS", "weighted distance to five Boston employment centres", "miles (weighted)"),
    Column("RAD", "index of accessibility to radial highways", "index"),
    Column("TAX", "full-value property-tax rate", "USD per 10,000"),
    Column("PTRATIO", "pupil-teacher ratio by town", "pupils per teacher"),
    Column("B", "1000(Bk - 0.63)^2, Bk the share of Black residents by town (see data/README.md)", "index",
           aliases=("black",)),  # R's MASS::Boston calls it black
    Column("LSTAT", "share of the population of lower status", "%"),
)
TARGET = Column("MEDV", "median value of owner-occupied homes", "USD 1000s")

FEATURE_NAMES: tuple[str, ...] = tuple(column.name for column in FEATURES)

# The workshop notebook's GLM formula: MEDV ~ CRIM + INDUS + CHAS + RM + AGE + DIS + TAX + LSTAT.
LINEAR_FEATURES: tuple[str, ...] = ("CRIM", "INDUS", "CHAS", "RM", "AGE", "DIS", "TAX", "LSTAT")

# Names of the graph's tensors, shared by both models: raw features in, MEDV out.
INPUT_NAME = "features"
OUTPUT_NAME = "MEDV"
# The explanation outputs, after MEDV in this order (the contract with serve, see export/explain.py):
# the prediction interval's bounds [batch, 1] and each feature's contribution [batch, 13], all float32.
LOWER_NAME = f"{OUTPUT_NAME}_lower"
UPPER_NAME = f"{OUTPUT_NAME}_upper"
CONTRIBUTIONS_NAME = "contributions"
EXPLANATION_NAMES: tuple[str, ...] = (LOWER_NAME, UPPER_NAME, CONTRIBUTIONS_NAME)
# A boolean scalar input with the default False: only a call that feeds it True computes the explanations,
# so that a MEDV-only call does not pay for them (onnxruntime runs every node, asked for or not).
EXPLAIN_NAME = "explain"
INTERVAL_LEVEL = 0.9
