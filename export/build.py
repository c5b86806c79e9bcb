"""Train, convert and check both models; nothing here writes files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx

from export import linear, metadata, mlp, parity, runtime
from export.data import Dataset
from export.errors import ExportError
from export.metrics import Array, Metrics, Predict, out_of_fold, score
from export.parity import Parity
from export.schema import FEATURE_NAMES, LINEAR_FEATURES


@dataclass(frozen=True)
class Exported:
    name: str
    model: onnx.ModelProto  # checked, parity proven, metadata attached
    native: Predict  # the scikit-learn or torch model it was converted from
    metadata: dict[str, str]
    parity: Parity
    in_sample: Metrics  # of the ONNX graph on all training rows
    cv: Metrics  # of the pooled out-of-fold predictions
    actual: Array  # the training target
    predicted: Array  # in-sample predictions of the ONNX graph
    out_of_fold: Array


NAMES = ("linear", "mlp")


def both(dataset: Dataset, versions: dict[str, int]) -> list[Exported]:
    return [linear_model(dataset, versions["linear"]), mlp_model(dataset, versions["mlp"])]


def linear_model(dataset: Dataset, version: int = 1) -> Exported:
    x, y = dataset.features, dataset.target
    pipeline = linear.fit(x, y)
    converted = linear.convert(pipeline)
    # The shipped graph is derived from the converter's; both must match scikit-learn.
    parity.check("linear (skl2onnx graph)", converted, pipeline.predict, x)
    return _finish(
        dataset,
        name="linear",
        version=version,
        description=f"Linear regression (OLS) on 8 standardized features, the workshop GLM {linear.FORMULA}",
        graph=linear.fold(converted),
        native=pipeline.predict,
        oof=out_of_fold(lambda fx, fy, fold: linear.fit(fx, fy).predict, x, y),
        features_used=LINEAR_FEATURES,
        hyperparameters={"formula": linear.FORMULA, "estimator": "StandardScaler + LinearRegression"},
    )


def mlp_model(dataset: Dataset, version: int = 1, config: mlp.Config = mlp.CHOSEN) -> Exported:
    x, y = dataset.features, dataset.target
    oof, kept_epochs = mlp.cross_validate(config, x, y, desc="mlp")
    epochs = mlp.final_epochs(config, kept_epochs)
    trained = mlp.train(config, x, y, epochs=epochs, desc="mlp refit on all rows")
    return _finish(
        dataset,
        name="mlp",
        version=version,
        description=f"Neural network (MLP {config.describe()}) on all 13 standardized features",
        graph=mlp.to_onnx(mlp.fold_standardization(trained.module)),
        native=mlp.predictor(trained.module),
        oof=oof,
        features_used=FEATURE_NAMES,
        hyperparameters=mlp.hyperparameters(config, epochs),
    )


def _finish(
    dataset: Dataset,
    *,
    name: str,
    version: int,
    description: str,
    graph: onnx.ModelProto,
    native: Predict,
    oof: Array,
    features_used: tuple[str, ...],
    hyperparameters: dict[str, Any],
) -> Exported:
    _check(name, graph)
    proof = parity.check(name, graph, native, dataset.features)
    predicted = runtime.predict(graph, dataset.features)
    in_sample, cv = score(dataset.target, predicted), score(dataset.target, oof)
    tags = metadata.build(
        name=name,
        version=version,
        description=description,
        features_used=features_used,
        in_sample=in_sample,
        cv=cv,
        dataset=dataset,
        hyperparameters=hyperparameters,
        golden=parity.golden(graph, dataset.features),
    )
    model = metadata.attach(graph, tags)
    _check(name, model)
    return Exported(name, model, native, tags, proof, in_sample, cv, dataset.target, predicted, oof)


def _check(name: str, model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"{name}: invalid ONNX graph: {error}") from error
