"""Evaluation metrics for remaining-useful-life predictions, as the C-MAPSS literature uses them.

``rmse`` is computed against the true RUL capped at the piecewise-linear cap (the convention
of the recent papers: an engine 180 cycles from failure looks healthy, so the target there
is the cap); ``rmse_uncapped`` against the file as given. The PHM08 score penalises late
predictions (predicted > true, d > 0) more than early ones:
sum of exp(-d/13) - 1 for d < 0 and exp(d/10) - 1 for d >= 0, with d = predicted - true.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["FailureMetrics", "RulMetrics", "brier", "failure_metrics", "phm08_score", "rmse", "roc_auc", "rul_metrics"]

FloatArray = npt.NDArray[np.float64]


def _pair(predicted: npt.ArrayLike, true: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    p = np.asarray(predicted, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 1 or len(p) == 0:
        raise ValueError(f"expected two non-empty vectors of the same length, got {p.shape} and {t.shape}")
    return p, t


def rmse(predicted: npt.ArrayLike, true: npt.ArrayLike) -> float:
    p, t = _pair(predicted, true)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def phm08_score(predicted: npt.ArrayLike, true: npt.ArrayLike) -> float:
    """The PHM08 challenge score (lower is better; late predictions cost more)."""
    p, t = _pair(predicted, true)
    d = p - t
    return float(np.sum(np.where(d < 0, np.expm1(-d / 13.0), np.expm1(d / 10.0))))


@dataclass(frozen=True)
class RulMetrics:
    rmse: float  # against min(true, cap)
    rmse_uncapped: float  # against true as given
    score: float  # PHM08 score against min(true, cap)
    score_uncapped: float  # PHM08 score against true as given
    units: int
    cap: float


def rul_metrics(predicted: npt.ArrayLike, true: npt.ArrayLike, cap: float) -> RulMetrics:
    p, t = _pair(predicted, true)
    capped = np.minimum(t, cap)
    return RulMetrics(rmse(p, capped), rmse(p, t), phm08_score(p, capped), phm08_score(p, t), len(p), float(cap))


def brier(probability: npt.ArrayLike, happened: npt.ArrayLike) -> float:
    """Mean squared error of a probability against what happened (0 or 1)."""
    p, y = _pair(probability, happened)
    return float(np.mean((p - y) ** 2))


def roc_auc(probability: npt.ArrayLike, happened: npt.ArrayLike) -> float | None:
    """Area under the ROC curve (ties count half); None when only one class occurs."""
    p, y = _pair(probability, happened)
    positive, negative = p[y > 0.5], p[y <= 0.5]
    if len(positive) == 0 or len(negative) == 0:
        return None
    wins = (positive[:, None] > negative[None, :]).sum() + 0.5 * (positive[:, None] == negative[None, :]).sum()
    return float(wins / (len(positive) * len(negative)))


@dataclass(frozen=True)
class FailureMetrics:
    horizon: float  # cycles: "fails within the horizon" means true RUL <= horizon
    brier: float
    auc: float | None
    positives: int


def failure_metrics(probability: npt.ArrayLike, true_rul: npt.ArrayLike, horizon: float) -> FailureMetrics:
    p, t = _pair(probability, true_rul)
    happened = (t <= horizon).astype(np.float64)
    return FailureMetrics(float(horizon), brier(p, happened), roc_auc(p, happened), int(happened.sum()))
