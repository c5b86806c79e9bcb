"""The statistics of ordinary least squares for the linear model: its coefficient table and its exact
prediction interval, in float64, from the raw rows (the fitted function is the pipeline's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from export.metrics import Array

TABLE_LEVEL = 0.95  # the notebook's coefficient table prints 95% intervals


@dataclass(frozen=True)
class Ols:
    mean: Array  # (p,) training means of the used columns
    coefficients: Array  # (p,) per raw unit
    intercept: float  # the prediction at the training means
    centered_inverse: Array  # (p, p) (Xc'Xc)^-1, Xc the centered used columns
    rows: int
    sigma: float  # residual standard error, s^2 = RSS / (n - p - 1)

    @property
    def dof(self) -> int:
        return self.rows - len(self.mean) - 1

    def t(self, level: float) -> float:
        """The two-sided `level` quantile of Student's t with the residual degrees of freedom."""
        return float(stats.t.ppf(0.5 + level / 2, self.dof))


def fit(used: Array, target: Array) -> Ols:
    """OLS with an intercept on the used raw columns; centering makes the intercept block of (X'X)^-1 1/n."""
    mean = used.mean(axis=0)
    centered = used - mean
    coefficients, *_ = np.linalg.lstsq(centered, target - target.mean(), rcond=None)
    residuals = target - target.mean() - centered @ coefficients
    rows, columns = used.shape
    return Ols(mean, coefficients, float(target.mean()), np.linalg.inv(centered.T @ centered), rows,
               float(np.sqrt(residuals @ residuals / (rows - columns - 1))))


def interval(ols: Ols, used: Array, level: float) -> tuple[Array, Array]:
    """t(level, n-p) * s * sqrt(1 + x0' (X'X)^-1 x0) around the prediction, x0 = (1, x), X the design
    with its intercept column: the textbook form, computed with the full (X'X)^-1."""
    inverse = _design_inverse(ols)
    x0 = np.column_stack([np.ones(len(used)), used])
    leverage = np.einsum("ij,jk,ik->i", x0, inverse, x0)
    centre = ols.intercept + (used - ols.mean) @ ols.coefficients
    half = ols.t(level) * ols.sigma * np.sqrt(1 + leverage)
    return centre - half, centre + half


def table(used: Array, target: Array, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The notebook's GLM table: OLS on features standardized with the sample std (ddof=1, as the
    notebook's MLJ Standardizer), so the slopes are per sample standard deviation."""
    std = used.std(axis=0, ddof=1)
    ols = fit(used / std, target)
    # With centered columns the intercept is the mean of MEDV and its variance s^2 / n.
    estimates = np.concatenate([[ols.intercept], ols.coefficients])
    errors = ols.sigma * np.sqrt(np.concatenate([[1 / ols.rows], np.diag(ols.centered_inverse)]))
    t = estimates / errors
    p = 2 * stats.t.sf(np.abs(t), ols.dof)
    margin = ols.t(TABLE_LEVEL) * errors
    return [
        {"term": term, "coefficient": float(b), "std_error": float(e), "t": float(tv), "p": float(pv),
         "ci_lower": float(b - m), "ci_upper": float(b + m)}
        for term, b, e, tv, pv, m in zip(("Intercept", *names), estimates, errors, t, p, margin)
    ]


def _design_inverse(ols: Ols) -> Array:
    """(X'X)^-1 of the raw design [1, x] from that of the centered design [1, x - mean] (block diagonal)."""
    columns = len(ols.mean)
    centered = np.zeros((columns + 1, columns + 1))
    centered[0, 0] = 1 / ols.rows
    centered[1:, 1:] = ols.centered_inverse
    back = np.eye(columns + 1)
    back[0, 1:] = -ols.mean  # [1, x - mean] = [1, x] @ back
    return back @ centered @ back.T
