"""Train, convert and check both models; nothing here writes files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from export import conformal, explain, linear, metadata, mlp, ols, parity, runtime, shapley
from export.data import Dataset
from export.errors import ExportError
from export.explain import Explain
from export.metrics import Array, Metrics, Predict, out_of_fold, score
from export.parity import Parity
from export.schema import FEATURE_NAMES, INTERVAL_LEVEL, LINEAR_FEATURES


@dataclass(frozen=True)
class Exported:
    name: str
    model: onnx.ModelProto  # checked, parity proven, metadata attached
    native: Predict  # the scikit-learn or torch model it was converted from
    native_explain: Explain  # the explanation outputs computed natively
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
    statistics = ols.fit(x[:, linear.COLUMNS], y)
    bounds = [out_of_fold(lambda fx, fy, fold, side=side: _bound(fx, fy, side), x, y) for side in (0, 1)]
    return _finish(
        dataset,
        name="linear",
        version=version,
        description=f"Linear regression (OLS) on 8 standardized features, the workshop GLM {linear.FORMULA}",
        graph=explain.attach(linear.fold(converted), linear.explanation(statistics)),
        native=pipeline.predict,
        native_explain=linear.explain(statistics),
        oof=out_of_fold(lambda fx, fy, fold: linear.fit(fx, fy).predict, x, y),
        features_used=LINEAR_FEATURES,
        hyperparameters={"formula": linear.FORMULA, "estimator": "StandardScaler + LinearRegression"},
        interval=metadata.Interval(
            method="OLS prediction interval",
            description=f"The exact OLS {INTERVAL_LEVEL:.0%} prediction interval "
                        "t(0.95, n-p) s sqrt(1 + x0'(X'X)^-1 x0) around the prediction, valid if the errors are "
                        "independent, normal and homoscedastic; coverage measured on 5-fold out-of-fold rows",
            coverage=_coverage(y, *bounds),
            mean_width=float(np.mean(bounds[1] - bounds[0]))),
        baseline=statistics.intercept,
        coefficients=ols.table(x[:, linear.COLUMNS], y, LINEAR_FEATURES),
    )


def mlp_model(dataset: Dataset, version: int = 1, config: mlp.Config = mlp.CHOSEN) -> Exported:
    x, y = dataset.features, dataset.target
    oof, kept_epochs, _ = mlp.cross_validate(config, x, y, desc="mlp")
    epochs = mlp.final_epochs(config, kept_epochs)
    trained = mlp.train(config, x, y, epochs=epochs, desc="mlp refit on all rows")
    folded = mlp.fold_standardization(trained.module)
    reference, half_width = x.mean(axis=0), conformal.half_width(y - oof)
    return _finish(
        dataset,
        name="mlp",
        version=version,
        description=f"Neural network (MLP {config.describe()}) on all 13 standardized features",
        graph=explain.attach(mlp.to_onnx(folded), mlp.explanation(folded, reference, half_width)),
        native=mlp.predictor(trained.module),
        native_explain=mlp.explain(trained.module, reference, half_width),
        oof=oof,
        features_used=FEATURE_NAMES,
        hyperparameters=mlp.hyperparameters(config, epochs),
        interval=metadata.Interval(
            method=conformal.METHOD,
            description=f"The prediction +- q, q = {half_width:.4f} the conformal {INTERVAL_LEVEL:.0%} quantile of "
                        "the absolute out-of-fold residuals of the 5-fold cross-validation (one width for every "
                        "row); coverage and mean width measured with nested folds (python -m export.conformal), "
                        "where the models see 4/5 of the rows and the widths come out larger; chosen there over "
                        "CV+ on the same fold models (coverage 0.933, mean width 12.76)",
            coverage=conformal.MEASURED.coverage,
            mean_width=conformal.MEASURED.mean_width),
        baseline=float(mlp.predictor(trained.module)(reference[None])[0]),
        explained_rows=shapley.PARITY_ROWS,
    )


def _bound(features: Array, target: Array, side: int) -> Predict:
    statistics = ols.fit(features[:, linear.COLUMNS], target)
    return lambda rows: ols.interval(statistics, rows[:, linear.COLUMNS], INTERVAL_LEVEL)[side]


def _coverage(target: Array, lower: Array, upper: Array) -> float:
    return float(np.mean((lower <= target) & (target <= upper)))


def _finish(
    dataset: Dataset,
    *,
    name: str,
    version: int,
    description: str,
    graph: onnx.ModelProto,
    native: Predict,
    native_explain: Explain,
    oof: Array,
    features_used: tuple[str, ...],
    hyperparameters: dict[str, Any],
    interval: metadata.Interval,
    baseline: float,
    coefficients: list[dict[str, float | str]] | None = None,
    explained_rows: int | None = None,
) -> Exported:
    _check(name, graph)
    proof = parity.check(name, graph, native, dataset.features, native_explain, explained_rows)
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
        interval=interval,
        baseline=baseline,
        coefficients=coefficients,
    )
    model = metadata.attach(graph, tags)
    _check(name, model)
    return Exported(name, model, native, native_explain, tags, proof, in_sample, cv, dataset.target, predicted, oof)


def _check(name: str, model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"{name}: invalid ONNX graph: {error}") from error
