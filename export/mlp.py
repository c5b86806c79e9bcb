"""The neural network: a ReLU MLP on all 13 standardized features, trained full-batch with PyTorch."""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn
from tqdm import tqdm

from export import adam, reproducible, shapley
from export.explain import Branch, Explain, Explanation, computed
from export.metrics import Array, Predict, out_of_fold
from export.schema import CONTRIBUTIONS_NAME, FEATURE_NAMES, INPUT_NAME, LOWER_NAME, OUTPUT_NAME, UPPER_NAME


@dataclass(frozen=True)
class Config:
    hidden: tuple[int, ...]
    lr: float
    weight_decay: float
    max_epochs: int
    # Early stopping: stop after `patience` epochs without a better loss on a validation split held out of
    # the training rows, keep the best weights. None trains exactly max_epochs epochs.
    patience: int | None
    optimizer: Literal["Adam", "AdamW"] = "AdamW"
    validation_fraction: float = 0.15
    seed: int = 0

    def describe(self) -> str:
        layers = "->".join(str(width) for width in (len(FEATURE_NAMES), *self.hidden, 1))
        stopping = f"early stopping (patience {self.patience})" if self.patience else "no early stopping"
        return (
            f"{layers} ReLU, {self.optimizer} lr {self.lr:g} wd {self.weight_decay:g}, "
            f"<= {self.max_epochs} epochs, {stopping}"
        )


# The lowest 5-fold CV RMSE of the candidates in `python -m export.select`.
CHOSEN = Config(hidden=(64, 64), lr=1e-3, weight_decay=1e-2, max_epochs=5000, patience=200)


class Standardize(nn.Module):
    def __init__(self, mean: Array, std: Array) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@dataclass(frozen=True)
class Trained:
    module: nn.Sequential  # Standardize, then the network: raw features in, MEDV out
    epochs: int  # epochs whose weights were kept


def train(config: Config, features: Array, target: Array, epochs: int | None = None, desc: str = "") -> Trained:
    """Fit on all given rows; with `epochs` train exactly that many, else follow the config (early stopping)."""
    reproducible.check()
    torch.manual_seed(config.seed)
    rows = np.random.default_rng(config.seed).permutation(len(target))
    held_out = int(len(rows) * config.validation_fraction) if epochs is None and config.patience else 0
    fit_rows, validation_rows = rows[held_out:], rows[:held_out]
    mean, std = features[fit_rows].mean(axis=0), features[fit_rows].std(axis=0)
    module = nn.Sequential(Standardize(mean, np.where(std > 0, std, 1.0)), *_layers(config.hidden))
    with torch.no_grad():  # start at the mean price rather than 0, so no epochs are spent learning the offset
        module[-1].bias.fill_(float(target[fit_rows].mean()))
    x, y = _tensor(features[fit_rows]), _tensor(target[fit_rows]).reshape(-1, 1)
    x_val, y_val = _tensor(features[validation_rows]), _tensor(target[validation_rows]).reshape(-1, 1)
    optimizer = adam.Adam(module.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                          decoupled=config.optimizer == "AdamW")
    best_loss, best_epoch, best_state = float("inf"), epochs or config.max_epochs, module.state_dict()
    for epoch in tqdm(range(1, (epochs or config.max_epochs) + 1), desc=desc, leave=False, disable=not desc):
        optimizer.zero_grad()
        nn.functional.mse_loss(module(x), y).backward()
        optimizer.step()
        if held_out:
            with torch.no_grad():
                loss = nn.functional.mse_loss(module(x_val), y_val).item()
            if loss < best_loss:
                best_loss, best_epoch = loss, epoch
                best_state = {name: value.clone() for name, value in module.state_dict().items()}
            elif epoch - best_epoch >= (config.patience or 0):
                break
    if held_out:
        module.load_state_dict(best_state)
    return Trained(module.eval(), best_epoch)


def cross_validate(config: Config, features: Array, target: Array, desc: str = ""
                   ) -> tuple[Array, list[int], list[Predict]]:
    """Out-of-fold predictions, each fold's kept epoch count and model, in the order of `metrics.folds`;
    scaler and early stopping inside the fold."""
    kept_epochs: list[int] = []
    models: list[Predict] = []

    def fit(fold_features: Array, fold_target: Array, fold: str) -> Predict:
        trained = train(config, fold_features, fold_target, desc=f"{desc} {fold}" if desc else "")
        kept_epochs.append(trained.epochs)
        models.append(predictor(trained.module))
        return models[-1]

    return out_of_fold(fit, features, target), kept_epochs, models


def final_epochs(config: Config, kept_epochs: list[int]) -> int:
    """Epochs for the refit on all rows: what early stopping kept in cross-validation (median)."""
    return int(np.median(kept_epochs)) if config.patience else config.max_epochs


def predictor(module: nn.Module) -> Predict:
    def predict(features: Array) -> Array:
        with torch.inference_mode():
            return module(_tensor(features)).numpy().astype(np.float64).ravel()

    return predict


def fold_standardization(module: nn.Sequential) -> nn.Sequential:
    """The same function with (x - mean) / std folded into the first Linear: W' = W / std, b' = b - W' mean."""
    standardize, first, *rest = module
    weight = first.weight.detach().double() / standardize.std.double()
    bias = first.bias.detach().double() - weight @ standardize.mean.double()
    folded = nn.Linear(first.in_features, first.out_features)
    with torch.no_grad():
        folded.weight.copy_(weight.float())
        folded.bias.copy_(bias.float())
    return nn.Sequential(folded, *rest).eval()


def to_onnx(module: nn.Module) -> onnx.ModelProto:
    example = torch.zeros(2, len(FEATURE_NAMES))
    # The exporter logs about the optional torchvision and warns about its own internals: noise here.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            verbose=False,
        )
    assert program is not None
    return program.model_proto


def explanation(folded: nn.Sequential, reference: Array, half_width: float) -> Branch:
    """MEDV +- half_width, and the exact Shapley values with `reference` as the only background point."""
    contributions = shapley.branch(shapley.layers(folded), reference, computed(CONTRIBUTIONS_NAME))
    nodes = [
        helper.make_node("Sub", [OUTPUT_NAME, "interval_half_width"], [computed(LOWER_NAME)]),
        helper.make_node("Add", [OUTPUT_NAME, "interval_half_width"], [computed(UPPER_NAME)]),
    ]
    half = numpy_helper.from_array(np.array([half_width], np.float32), "interval_half_width")
    return Branch([*nodes, *contributions.nodes], [half, *contributions.constants])


def explain(module: nn.Module, reference: Array, half_width: float) -> Explain:
    predict = predictor(module)

    def native(features: Array) -> Explanation:
        predicted = predict(features)
        return Explanation(predicted - half_width, predicted + half_width,
                           shapley.native(module, reference, features))

    return native


def hyperparameters(config: Config, epochs: int) -> dict[str, Any]:
    return {**asdict(config), "activation": "ReLU", "loss": "MSE", "full_batch": True, "final_epochs": epochs}


def _layers(hidden: tuple[int, ...]) -> list[nn.Module]:
    widths = (len(FEATURE_NAMES), *hidden)
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths, widths[1:]):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    return [*layers, nn.Linear(widths[-1], 1)]


def _tensor(values: Array) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)
