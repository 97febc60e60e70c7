"""The C-MAPSS protocol: train on ``train_*``, predict at the last cycle of each ``test_*`` unit.

The test files and the true RUL are used only once the model is trained, and nothing
learned from them flows back: normalizer, features and trees are all fitted on the
training histories alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from maintenance_models.data import CmapssSubset
from maintenance_models.errors import DatasetError
from maintenance_models.metrics import FailureMetrics, RulMetrics, failure_metrics, rul_metrics
from maintenance_models.model import Progress, RulModel

__all__ = [
    "SUMMARY_KEYS",
    "CmapssReport",
    "evaluate",
    "plot_report",
    "report_text",
    "seeds_summary",
    "seeds_text",
    "train",
]

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
    seed: int = 0

    def above_cap(self) -> dict[str, Any]:
        """The test units whose true RUL exceeds the cap, and the uncapped error they carry.

        ``floor`` is the uncapped RMSE of a model that knew min(true RUL, cap) exactly: what a
        model trained on the capped target cannot get below, however good it is.
        """
        cap = self.rul.cap
        above = self.true_rul > cap
        squared = (self.predicted - self.true_rul) ** 2
        floor = float(np.sqrt(np.mean((np.minimum(self.true_rul, cap) - self.true_rul) ** 2)))
        units = int(above.sum())
        return {
            "above_cap_units": units,
            "above_cap_true_mean": round(float(self.true_rul[above].mean()), 2) if units else None,
            "above_cap_predicted_mean": round(float(self.predicted[above].mean()), 2) if units else None,
            "above_cap_sse_share": round(float(squared[above].sum() / squared.sum()), 4) if squared.sum() else 0.0,
            "rmse_uncapped_below_cap": round(float(np.sqrt(squared[~above].mean())), 4) if units < len(above) else None,
            "rmse_uncapped_floor": round(floor, 4),
        }

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` object, also stored as a registered model's metrics."""
        return {
            "subset": self.subset,
            "seed": self.seed,
            "rmse": round(self.rul.rmse, 4),
            "rmse_uncapped": round(self.rul.rmse_uncapped, 4),
            "score": round(self.rul.score, 2),
            "score_uncapped": round(self.rul.score_uncapped, 2),
            **self.above_cap(),
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
        seed=cfg.seed,
    )


SUMMARY_KEYS = ("rmse", "rmse_uncapped", "score", "score_uncapped", "above_cap_sse_share", "above_cap_predicted_mean")


def seeds_summary(reports: Sequence[CmapssReport]) -> dict[str, Any]:
    """Mean and sample standard deviation over runs that differ only in their seed, and each run."""
    if not reports or len({r.subset for r in reports}) != 1:
        raise ValueError("expected reports of one subset")
    runs = [r.as_dict() for r in reports]
    summary: dict[str, Any] = {"subset": reports[0].subset, "seeds": [r.seed for r in reports]}
    for key in SUMMARY_KEYS:
        values = [run[key] for run in runs]
        if any(v is None for v in values):
            continue
        summary[key] = {
            "mean": round(float(np.mean(values)), 4),
            "sd": round(float(np.std(values, ddof=1)), 4) if len(values) > 1 else 0.0,
            "values": values,
        }
    summary["above_cap_units"] = runs[0]["above_cap_units"]
    summary["rmse_uncapped_floor"] = runs[0]["rmse_uncapped_floor"]
    summary["units"] = runs[0]["units"]
    summary["runs"] = runs
    return summary


def seeds_text(summary: dict[str, Any]) -> str:
    """The mean ± sample standard deviation of each figure over the seeds."""

    def line(label: str, key: str, digits: int) -> str:
        figure = summary[key]
        values = " ".join(f"{v:.{digits}f}" for v in figure["values"])
        return f"  {label:36s} {figure['mean']:.{digits}f} ± {figure['sd']:.{digits}f}   ({values})"

    seeds = summary["seeds"]
    cap = summary["runs"][0]["cap"]
    lines = [
        f"C-MAPSS {summary['subset']}: {summary['units']} test units, seeds {seeds[0]}..{seeds[-1]}"
        f" ({len(seeds)} runs), mean ± standard deviation (per seed)",
        line(f"RMSE (truth capped at {cap:g}):", "rmse", 2),
        line("RMSE (truth as given):", "rmse_uncapped", 2),
        line("PHM08 score (capped truth):", "score", 1),
        line("PHM08 score (truth as given):", "score_uncapped", 1),
        f"  {summary['above_cap_units']} test units have a true RUL above {cap:g};"
        f" a perfect capped prediction would still have an uncapped RMSE of {summary['rmse_uncapped_floor']:.2f}",
    ]
    if "above_cap_predicted_mean" in summary:
        lines.append(line("  their mean predicted RUL:", "above_cap_predicted_mean", 1))
        lines.append(line("  their share of the squared error:", "above_cap_sse_share", 3))
    return "\n".join(lines)


def report_text(report: CmapssReport) -> str:
    auc = "n/a" if report.failure.auc is None else f"{report.failure.auc:.3f}"
    return "\n".join(
        [
            f"C-MAPSS {report.subset}: {report.rul.units} test units, {report.train_units} training units,"
            f" {report.regimes} operating regime(s), {report.sensors_used} sensors",
            f"  RMSE (truth capped at {report.rul.cap:g}): {report.rul.rmse:.2f}",
            f"  RMSE (truth as given):       {report.rul.rmse_uncapped:.2f}",
            f"  PHM08 score (capped truth):  {report.rul.score:.1f}",
            f"  PHM08 score (truth as given): {report.rul.score_uncapped:.1f}",
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
