"""The remaining-useful-life model: normalizer, window features, a boosted-tree ensemble.

RUL is a regression on the piecewise-linear target ``min(cycles left, cap)``: early in a
run the true RUL cannot be seen in the data, so it is not asked for. Failure within a
horizon is a separate classifier on the same features (label: cycles left <= horizon),
because a probability should be trained as one, not derived from a point estimate.

The regressor is the mean of a few histogram gradient-boosting models that differ only in
seed and see half of the features at each split (``max_features``): cheap variance
reduction. Everything random is seeded from ``RulConfig.seed``; the same data and config
give the same model.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from maintenance_models.data import Runs
from maintenance_models.errors import NotFittedError, TooLittleDataError
from maintenance_models.features import FeatureSpec, Normalizer, fit_normalizer, window_features

__all__ = ["Prediction", "Progress", "RulConfig", "RulModel"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
Progress = Callable[[int], object]  # called with a number of finished steps


class RulConfig(BaseModel):
    """Everything that shapes a model; one configuration serves every C-MAPSS subset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cap: float = Field(125.0, gt=0, description="Piecewise-linear RUL cap (cycles); predictions are clipped to it.")
    train_cap: float | None = Field(
        None, gt=0, description="Cap of the training target, when it differs from the cap (None: the cap)."
    )
    horizon: float = Field(30.0, gt=0, description="Failure-probability horizon (cycles).")
    max_regimes: int = Field(10, ge=2, le=30)
    min_silhouette: float = Field(0.9, gt=0, le=1, description="Below this, settings are one regime.")
    windows: tuple[int, ...] = (5, 10, 20, 30, 50)
    slope_windows: tuple[int, ...] = (10, 20, 50, 100)
    baseline_cycles: int = Field(20, ge=0)
    recent_cycles: int = Field(10, ge=1)
    history_mean: bool = True
    use_cycle: bool = True
    ensemble: int = Field(3, ge=1, le=20, description="Regressors averaged, each with its own seed.")
    max_iter: int = Field(600, ge=1)
    learning_rate: float = Field(0.06, gt=0, le=1)
    classifier_max_iter: int = Field(150, ge=1, description="Boosting rounds of the failure classifier.")
    max_leaf_nodes: int = Field(7, ge=2)
    min_samples_leaf: int = Field(50, ge=1)
    l2_regularization: float = Field(1.0, ge=0)
    max_features: float = Field(0.5, gt=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _windows_positive(self) -> RulConfig:
        if any(w < 1 for w in (*self.windows, *self.slope_windows)):
            raise ValueError("windows must be at least one cycle")
        if any(w < 2 for w in self.slope_windows):
            raise ValueError("a slope needs a window of at least two cycles")
        return self

    @property
    def features(self) -> FeatureSpec:
        return FeatureSpec(
            windows=self.windows,
            slope_windows=self.slope_windows,
            baseline_cycles=self.baseline_cycles,
            recent_cycles=self.recent_cycles,
            history_mean=self.history_mean,
            use_cycle=self.use_cycle,
        )

    def member_seeds(self) -> list[int]:
        """The regressors' seeds: drawn from ``seed``, so that two seeds share no member."""
        return [int(np.random.SeedSequence([self.seed, i]).generate_state(1)[0]) for i in range(self.ensemble)]

    def boosting(self, seed: int, *, classifier: bool = False) -> dict[str, Any]:
        return {
            "max_iter": self.classifier_max_iter if classifier else self.max_iter,
            "learning_rate": self.learning_rate,
            "max_leaf_nodes": self.max_leaf_nodes,
            "min_samples_leaf": self.min_samples_leaf,
            "l2_regularization": self.l2_regularization,
            "max_features": self.max_features,
            "early_stopping": False,
            "random_state": seed,
        }


@dataclass(frozen=True)
class Prediction:
    """One prediction per unit, at the unit's last cycle, in unit order."""

    unit: npt.NDArray[np.int64]
    rul: FloatArray
    failure_prob: FloatArray


def _thread_limit(threads: int | None) -> AbstractContextManager[object]:
    """Cap the OpenMP/BLAS threads of scikit-learn (None: its own default, one per core).

    Gradient boosting spins its OpenMP threads while it waits: on a machine whose cores are
    busy with other work, more threads than free cores made a small fit 11 times slower
    (56 s instead of 5 s), so the default is one thread.
    """
    if threads is None:
        return contextlib.nullcontext()
    limits: AbstractContextManager[object] = threadpool_limits(limits=threads)
    return limits


class RulModel:
    """Fit on run-to-failure histories; predict RUL and failure probability per unit."""

    def __init__(self, config: RulConfig | None = None, *, threads: int | None = 1) -> None:
        self.config = config or RulConfig()
        self.threads = threads
        self.sensor_names: tuple[str, ...] = ()
        self.normalizer: Normalizer | None = None
        self.regressors: list[Any] = []
        self.classifier: Any = None
        self.training_rows = 0
        self.training_units = 0

    def steps(self, runs: Runs) -> int:
        """How many progress steps ``fit`` reports: one per unit, one per tree model."""
        return len(runs.units) + self.config.ensemble + 1

    def fit(self, runs: Runs, progress: Progress | None = None, *, classifier: bool = True) -> RulModel:
        """Train; ``classifier=False`` leaves the failure classifier out (cross-validation of RUL)."""
        with _thread_limit(self.threads):
            return self._fit(runs, progress, with_classifier=classifier)

    def _fit(self, runs: Runs, progress: Progress | None, *, with_classifier: bool) -> RulModel:
        if len(runs.units) < 2:
            raise TooLittleDataError(f"need run-to-failure histories of at least 2 units, got {len(runs.units)}")
        cfg = self.config
        self.sensor_names = runs.sensor_names
        self.normalizer = fit_normalizer(
            runs, max_regimes=cfg.max_regimes, min_silhouette=cfg.min_silhouette, seed=cfg.seed
        )
        log.info(
            "%d operating regime(s); %d of %d sensors used",
            self.normalizer.regime_count,
            int(self.normalizer.keep.sum()),
            len(runs.sensor_names),
        )
        x = window_features(self.normalizer.transform(runs), runs, cfg.features, progress)
        remaining = runs.remaining()
        y = np.minimum(remaining, cfg.cap if cfg.train_cap is None else cfg.train_cap)
        self.regressors = []
        for seed in cfg.member_seeds():
            self.regressors.append(HistGradientBoostingRegressor(**cfg.boosting(seed)).fit(x, y))
            if progress is not None:
                progress(1)
        failed = remaining <= cfg.horizon
        if not with_classifier:
            self.classifier = None
        elif failed.all() or not failed.any():  # one class only: the share is the best estimate
            self.classifier = float(failed.mean())
        else:
            self.classifier = HistGradientBoostingClassifier(**cfg.boosting(cfg.seed, classifier=True)).fit(x, failed)
        if progress is not None:
            progress(1)
        self.training_rows, self.training_units = len(runs.unit), len(runs.units)
        return self

    def features(self, runs: Runs) -> FloatArray:
        """The model's inputs at every row of ``runs`` (each from that row and the ones before it)."""
        if self.normalizer is None or not self.regressors:
            raise NotFittedError("the model has not been trained")
        if runs.sensor_names != self.sensor_names:
            raise ValueError(f"the model was trained on sensors {self.sensor_names}, got {runs.sensor_names}")
        return window_features(self.normalizer.transform(runs), runs, self.config.features)

    def member_predictions(self, x: FloatArray) -> FloatArray:
        """Each regressor's RUL for the feature rows ``x``: (members, rows), not clipped."""
        with _thread_limit(self.threads):
            return np.array([r.predict(x) for r in self.regressors], dtype=np.float64)

    def predict(self, runs: Runs) -> Prediction:
        """RUL and failure probability at the last cycle of each unit in ``runs``."""
        with _thread_limit(self.threads):
            return self._predict(runs)

    def _predict(self, runs: Runs) -> Prediction:
        x = self.features(runs)[runs.last_rows()]
        rul = np.mean([r.predict(x) for r in self.regressors], axis=0)
        rul = np.clip(rul, 0.0, self.config.cap)
        if self.classifier is None:
            raise NotFittedError("the model was trained without its failure classifier")
        if isinstance(self.classifier, float):
            prob = np.full(len(x), self.classifier)
        else:
            prob = self.classifier.predict_proba(x)[:, list(self.classifier.classes_).index(True)]
        return Prediction(runs.units.astype(np.int64), rul.astype(np.float64), np.asarray(prob, dtype=np.float64))
