"""Cross-validation on the training histories alone: how settings are chosen.

The units of a training file are split into folds (grouped by unit: no engine is both
learned from and scored). A model is trained on the other folds and each held-out unit is
scored at ``cuts`` random cycles, at least ``min_seen`` cycles into its life and at least
one cycle before its failure, the way the test files cut their units. Because the window
features at a cycle use only that cycle and the ones before it, the features of the full
held-out history, read at a cut, are those of the history truncated there.

The test files are never opened here: a setting chosen by this score has not seen them.
Each regressor of the ensemble is scored on its own and every prefix of the ensemble is
scored too, so one run with ``ensemble=8`` tells what 1 to 8 members are worth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from maintenance_models.data import Runs
from maintenance_models.errors import TooLittleDataError
from maintenance_models.metrics import phm08_score, rmse
from maintenance_models.model import RulConfig, RulModel

__all__ = ["METRIC_CAP", "CvReport", "cross_validate", "cv_steps", "cv_text", "select_units"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

METRIC_CAP = 125.0  # the benchmark's convention: truth capped at 125 whatever the training cap


@dataclass(frozen=True)
class CvReport:
    subset: str
    folds: int
    cuts: int  # scored cycles per held-out unit (fewer where the unit is short)
    predictions: int
    rmse: float  # pooled over every scored cycle, truth capped at METRIC_CAP
    score: float  # mean PHM08 term per scored cycle, times 100 (a 100-unit test file's scale)
    fold_rmse: tuple[float, ...]
    members_rmse: tuple[float, ...]  # the mean of the first k regressors, k = 1..ensemble
    config: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "subset": self.subset,
            "folds": self.folds,
            "cuts": self.cuts,
            "predictions": self.predictions,
            "rmse": round(self.rmse, 4),
            "score_per_100": round(self.score, 2),
            "fold_rmse": [round(v, 4) for v in self.fold_rmse],
            "fold_rmse_sd": round(float(np.std(self.fold_rmse, ddof=1)), 4) if self.folds > 1 else None,
            "members_rmse": [round(v, 4) for v in self.members_rmse],
            "config": self.config,
        }


def select_units(runs: Runs, units: IntArray) -> Runs:
    """The histories of ``units`` only."""
    rows = np.isin(runs.unit, units)
    return Runs(runs.unit[rows], runs.cycle[rows], runs.settings[rows], runs.sensors[rows], runs.sensor_names)


def _cut_rows(held: Runs, cuts: int, min_seen: int, rng: np.random.Generator) -> IntArray:
    """Rows at which each held-out unit is scored."""
    chosen: list[IntArray] = []
    for start, stop in held.bounds():
        candidates = np.arange(start + min_seen - 1, stop - 1, dtype=np.int64)
        if len(candidates) == 0:
            continue
        take = min(cuts, len(candidates))
        chosen.append(np.sort(rng.choice(candidates, size=take, replace=False)))
    if not chosen:
        raise TooLittleDataError(f"no held-out unit has more than {min_seen} cycles")
    return np.concatenate(chosen)


def cross_validate(
    runs: Runs,
    config: RulConfig,
    *,
    subset: str = "",
    folds: int = 5,
    cuts: int = 20,
    min_seen: int = 31,
    threads: int | None = 1,
    progress: Callable[[int], object] | None = None,
) -> CvReport:
    """Grouped ``folds``-fold cross-validation of the RUL regressor on ``runs``.

    The fold split and the cut points depend on ``config.seed`` only, so two configurations
    with the same seed are scored on the same folds and cycles.
    """
    units = runs.units
    if folds < 2 or len(units) < folds:
        raise TooLittleDataError(f"{folds} folds need at least {max(folds, 2)} units, got {len(units)}")
    rng = np.random.default_rng(config.seed)
    groups = np.array_split(rng.permutation(units), folds)
    truth: list[FloatArray] = []
    members: list[FloatArray] = []
    fold_rmse: list[float] = []
    for group in groups:
        model = RulModel(config, threads=threads).fit(select_units(runs, units[~np.isin(units, group)]), progress,
                                                      classifier=False)  # fmt: skip
        held = select_units(runs, group.astype(np.int64))
        rows = _cut_rows(held, cuts, min_seen, rng)
        each = model.member_predictions(model.features(held)[rows])  # (members, rows)
        true = np.minimum(held.remaining()[rows], METRIC_CAP)
        fold_rmse.append(rmse(np.clip(each.mean(axis=0), 0.0, config.cap), true))
        truth.append(true)
        members.append(each)
    true_all = np.concatenate(truth)
    each_all = np.concatenate(members, axis=1)
    prefix = np.cumsum(each_all, axis=0) / np.arange(1, len(each_all) + 1)[:, None]
    prefix = np.clip(prefix, 0.0, config.cap)
    predicted = prefix[-1]
    return CvReport(
        subset=subset,
        folds=folds,
        cuts=cuts,
        predictions=len(true_all),
        rmse=rmse(predicted, true_all),
        score=100.0 * phm08_score(predicted, true_all) / len(true_all),
        fold_rmse=tuple(fold_rmse),
        members_rmse=tuple(rmse(p, true_all) for p in prefix),
        config=config.model_dump(mode="json"),
    )


def cv_steps(runs: Runs, config: RulConfig, folds: int) -> int:
    """Progress steps of ``cross_validate``: each fold's training units and its regressors."""
    return (folds - 1) * len(runs.units) + folds * (config.ensemble + 1)


def cv_text(report: CvReport) -> str:
    members = " ".join(f"{v:.2f}" for v in report.members_rmse)
    folds = " ".join(f"{v:.2f}" for v in report.fold_rmse)
    sd = f" ± {np.std(report.fold_rmse, ddof=1):.2f} across folds" if report.folds > 1 else ""
    return "\n".join(
        [
            f"{report.subset}: {report.folds}-fold cross-validation grouped by unit, training file only,"
            f" {report.predictions} scored cycles",
            f"  RMSE (truth capped at {METRIC_CAP:g}): {report.rmse:.2f}{sd} (folds: {folds})",
            f"  PHM08 score per 100 predictions: {report.score:.1f}",
            f"  RMSE of the first k regressors, k = 1..{len(report.members_rmse)}: {members}",
        ]
    )
