"""The C-MAPSS protocol: train on ``train_*``, predict at the last cycle of each ``test_*`` unit.

The test files and the true RUL are used only once the model is trained, and nothing
learned from them flows back: normalizer, features and trees are all fitted on the
training histories alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from maintenance_models.data import CmapssSubset
from maintenance_models.errors import DatasetError
from maintenance_models.metrics import FailureMetrics, RulMetrics, failure_metrics, rul_metrics
from maintenance_models.model import Progress, RulModel

__all__ = ["CmapssReport", "evaluate", "plot_report", "report_text", "train"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CmapssReport:
    subset: str
    rul: RulMetrics
    failure: FailureMetrics
    unit: npt.NDArray[np.int64]
    true_rul: FloatArray
    predicted: FloatArray
    failure_prob: FloatArray
    regimes: int
    sensors_used: int
    train_units: int
    train_seconds: float
    predict_seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` object, also stored as a registered model's metrics."""
        return {
            "subset": self.subset,
            "rmse": round(self.rul.rmse, 4),
            "rmse_uncapped": round(self.rul.rmse_uncapped, 4),
            "score": round(self.rul.score, 2),
            "units": self.rul.units,
            "cap": self.rul.cap,
            "failure_horizon": self.failure.horizon,
            "failure_brier": round(self.failure.brier, 4),
            "failure_auc": None if self.failure.auc is None else round(self.failure.auc, 4),
            "regimes": self.regimes,
            "sensors_used": self.sensors_used,
            "train_units": self.train_units,
            "train_seconds": round(self.train_seconds, 1),
            "predict_seconds": round(self.predict_seconds, 2),
        }


def train(subset: CmapssSubset, model: RulModel, progress: Progress | None = None) -> float:
    """Fit ``model`` on the subset's training histories; the seconds it took."""
    started = time.perf_counter()
    model.fit(subset.train, progress)
    return time.perf_counter() - started


def evaluate(subset: CmapssSubset, model: RulModel, progress: Progress | None = None) -> CmapssReport:
    """Train ``model`` (unless it already is) and score it on the subset's test units."""
    if subset.test is None or subset.rul is None:
        raise DatasetError(f"{subset.name}: evaluation needs the test file and the RUL file")
    seconds = 0.0 if model.normalizer is not None else train(subset, model, progress)
    started = time.perf_counter()
    prediction = model.predict(subset.test)
    predict_seconds = time.perf_counter() - started
    cfg = model.config
    assert model.normalizer is not None
    return CmapssReport(
        subset=subset.name,
        rul=rul_metrics(prediction.rul, subset.rul, cfg.cap),
        failure=failure_metrics(prediction.failure_prob, subset.rul, cfg.horizon),
        unit=prediction.unit,
        true_rul=subset.rul,
        predicted=prediction.rul,
        failure_prob=prediction.failure_prob,
        regimes=model.normalizer.regime_count,
        sensors_used=int(model.normalizer.keep.sum()),
        train_units=model.training_units,
        train_seconds=seconds,
        predict_seconds=predict_seconds,
    )


def report_text(report: CmapssReport) -> str:
    auc = "n/a" if report.failure.auc is None else f"{report.failure.auc:.3f}"
    return "\n".join(
        [
            f"C-MAPSS {report.subset}: {report.rul.units} test units, {report.train_units} training units,"
            f" {report.regimes} operating regime(s), {report.sensors_used} sensors",
            f"  RMSE (truth capped at {report.rul.cap:g}): {report.rul.rmse:.2f}",
            f"  RMSE (truth as given):       {report.rul.rmse_uncapped:.2f}",
            f"  PHM08 score (capped truth):  {report.rul.score:.1f}",
            f"  failure within {report.failure.horizon:g} cycles: Brier {report.failure.brier:.3f}, ROC AUC {auc}"
            f" ({report.failure.positives} units did fail)",
            f"  training {report.train_seconds:.1f} s, prediction {report.predict_seconds:.2f} s",
        ]
    )


def plot_report(report: CmapssReport, path: Path) -> None:
    """A PNG: per unit (sorted by true RUL) the capped truth and the prediction, and a scatter."""
    import matplotlib as mpl  # noqa: PLC0415  (half a second, for the plot only)

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415  (after the backend is chosen)

    capped = np.minimum(report.true_rul, report.rul.cap)
    order = np.argsort(capped, kind="stable")
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [2, 1]})
    try:
        x = np.arange(len(order))
        left.plot(x, capped[order], color="black", linewidth=1.5, label=f"true RUL (capped at {report.rul.cap:g})")
        left.scatter(x, report.predicted[order], s=10, color="tab:blue", label="predicted RUL")
        left.vlines(x, capped[order], report.predicted[order], color="tab:blue", alpha=0.3, linewidth=0.8)
        left.set(xlabel="test unit (sorted by true RUL)", ylabel="RUL (cycles)",
                 title=f"{report.subset}: RMSE {report.rul.rmse:.2f}, score {report.rul.score:.0f}")  # fmt: skip
        left.legend(loc="upper left")
        right.scatter(capped, report.predicted, s=10, color="tab:blue")
        right.plot([0, report.rul.cap], [0, report.rul.cap], color="black", linewidth=1)
        right.set(xlabel="true RUL (capped)", ylabel="predicted RUL", title="predicted vs true")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
