"""From raw histories to model inputs: operating-condition normalization and window features.

Sensors move with the operating condition far more than with wear (FD002's six flight
regimes shift some sensors by hundreds of units). The normalizer finds the regimes by
clustering the operating settings with k-means, keeps the clustering only when it is
clearly real (silhouette above a threshold; noise around one setting never is), and
standardizes each sensor within its regime. One rule, no per-dataset switch: a
single-regime set ends up with one cluster and plain standardization.

Window features are computed for every cycle from the history up to and including it
(nothing later), so the same function serves training rows and the last cycle of a
unit in service: means over the last few cycles, least-squares slopes, the drift from the
unit's own first cycles (engines start with different wear), the mean of the whole
history and, optionally, the log of the cycle count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from maintenance_models.data import Runs
from maintenance_models.errors import TooLittleDataError

__all__ = ["FeatureSpec", "Normalizer", "feature_names", "fit_normalizer", "unit_features", "window_features"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_MIN_DISTINCT = 3  # a sensor with fewer distinct values in a regime is constant or quantization noise
_SILHOUETTE_SAMPLE = 2000


@dataclass(frozen=True)
class Normalizer:
    settings_mean: FloatArray
    settings_scale: FloatArray
    centers: FloatArray  # regime centers in standardized settings space, (regimes, settings)
    sensor_mean: FloatArray  # (regimes, sensors)
    sensor_scale: FloatArray  # (regimes, sensors)
    keep: BoolArray  # (sensors,): the sensors that carry information
    silhouette: float | None  # of the chosen clustering; None when there was nothing to cluster

    @property
    def regime_count(self) -> int:
        return len(self.centers)

    def regimes(self, settings: FloatArray) -> IntArray:
        if self.regime_count == 1:
            return np.zeros(len(settings), dtype=np.int64)
        z = (settings - self.settings_mean) / self.settings_scale
        distance = ((z[:, None, :] - self.centers[None, :, :]) ** 2).sum(axis=2)
        regime: IntArray = np.argmin(distance, axis=1).astype(np.int64)
        return regime

    def transform(self, runs: Runs) -> FloatArray:
        """Sensors standardized within their regime, informative sensors only."""
        regime = self.regimes(runs.settings)
        z = (runs.sensors - self.sensor_mean[regime]) / self.sensor_scale[regime]
        return np.ascontiguousarray(z[:, self.keep])


def _standardize(settings: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    mean = settings.mean(axis=0)
    scale = settings.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return (settings - mean) / scale, mean, scale


def _cluster(z: FloatArray, max_regimes: int, min_silhouette: float, seed: int) -> tuple[FloatArray, float | None]:
    """Regime centers: the k-means clustering with the best silhouette, if it beats the bar."""
    if z.shape[1] == 0 or len(z) < 2 * max(max_regimes, 2):
        return np.zeros((1, z.shape[1])), None
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(z), size=min(len(z), _SILHOUETTE_SAMPLE), replace=False)
    best: tuple[float, FloatArray] | None = None
    picked = z[sample]  # regimes are few and far apart: a few thousand rows place them
    for k in range(2, max_regimes + 1):
        kmeans = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(picked)
        labels = kmeans.labels_
        if len(np.unique(labels)) < 2:
            continue
        quality = float(silhouette_score(picked, labels))
        if best is None or quality > best[0]:
            best = (quality, np.asarray(kmeans.cluster_centers_, dtype=np.float64))
    if best is None:
        return np.zeros((1, z.shape[1])), None
    log.debug("best regime clustering: %d clusters, silhouette %.3f", len(best[1]), best[0])
    if best[0] < min_silhouette:
        return np.zeros((1, z.shape[1])), best[0]
    return best[1], best[0]


def fit_normalizer(runs: Runs, *, max_regimes: int, min_silhouette: float, seed: int) -> Normalizer:
    """Learn regimes and per-regime sensor statistics from training histories only."""
    z, s_mean, s_scale = _standardize(runs.settings)
    centers, silhouette = _cluster(z, max_regimes, min_silhouette, seed)
    partial = Normalizer(s_mean, s_scale, centers, np.zeros((1, 0)), np.ones((1, 0)), np.zeros(0, bool), silhouette)
    regime = partial.regimes(runs.settings)
    count, sensors = len(centers), runs.sensors.shape[1]
    mean, scale = np.zeros((count, sensors)), np.ones((count, sensors))
    keep = np.ones(sensors, dtype=bool)
    for r in range(count):
        block = runs.sensors[regime == r]
        if len(block) == 0:
            continue
        mean[r] = block.mean(axis=0)
        std = block.std(axis=0)
        scale[r] = np.where(std > 0, std, 1.0)
        keep &= np.array([len(np.unique(block[:, j])) >= _MIN_DISTINCT for j in range(sensors)])
    if not keep.any():
        raise TooLittleDataError("no sensor varies within the operating regimes: nothing to learn from")
    return Normalizer(s_mean, s_scale, centers, mean, scale, keep, silhouette)


@dataclass(frozen=True)
class FeatureSpec:
    windows: tuple[int, ...]  # means over the last w cycles
    slope_windows: tuple[int, ...]  # least-squares slopes over the last w cycles
    baseline_cycles: int  # drift: recent mean minus the mean of the first cycles (0: off)
    recent_cycles: int  # the "recent" side of the drift
    history_mean: bool  # mean over the whole history so far
    use_cycle: bool  # log(1 + cycles seen): off where the history start is arbitrary


def _window_sums(values: FloatArray, window: int) -> tuple[FloatArray, FloatArray]:
    """Sum over the last ``window`` rows (fewer at the start) and the row counts."""
    n = len(values)
    cum = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])
    end = np.arange(1, n + 1)
    start = np.maximum(end - window, 0)
    return cum[end] - cum[start], (end - start).astype(np.float64)


def unit_features(z: FloatArray, cycle: FloatArray, spec: FeatureSpec) -> FloatArray:
    """Features at every cycle of one unit, each from the rows up to that cycle."""
    n = len(z)
    parts: list[FloatArray] = []
    for w in spec.windows:
        total, count = _window_sums(z, w)
        parts.append(total / count[:, None])
    t = (cycle - cycle[0])[:, None]
    for w in spec.slope_windows:
        sx, m = _window_sums(z, w)
        st, _ = _window_sums(t, w)
        stt, _ = _window_sums(t * t, w)
        stx, _ = _window_sums(z * t, w)
        denominator = m * stt[:, 0] - st[:, 0] ** 2
        safe = np.where(denominator > 0, denominator, 1.0)
        slope = (m[:, None] * stx - st * sx) / safe[:, None]
        parts.append(np.where((denominator > 0)[:, None], slope, 0.0))
    cum = np.vstack([np.zeros((1, z.shape[1])), np.cumsum(z, axis=0)])
    seen = np.arange(1, n + 1)
    if spec.baseline_cycles > 0:
        first = np.minimum(seen, spec.baseline_cycles)
        recent, count = _window_sums(z, spec.recent_cycles)
        parts.append(recent / count[:, None] - cum[first] / first[:, None])
    if spec.history_mean:
        parts.append(cum[seen] / seen[:, None])
    if spec.use_cycle:
        parts.append(np.log1p(seen.astype(np.float64))[:, None])
    return np.hstack(parts) if parts else np.zeros((n, 0))


def window_features(
    z: FloatArray, runs: Runs, spec: FeatureSpec, progress: Callable[[int], object] | None = None
) -> FloatArray:
    """Features for every row of ``runs`` (``z`` is its normalized sensor matrix)."""
    out = np.empty((len(z), len(feature_names(z.shape[1], spec))))
    for start, stop in runs.bounds():
        out[start:stop] = unit_features(z[start:stop], runs.cycle[start:stop], spec)
        if progress is not None:
            progress(1)
    return out


def feature_names(sensors: int | list[str], spec: FeatureSpec) -> list[str]:
    names = [f"x{i}" for i in range(sensors)] if isinstance(sensors, int) else list(sensors)
    out = [f"{n}_mean{w}" for w in spec.windows for n in names]
    out += [f"{n}_slope{w}" for w in spec.slope_windows for n in names]
    if spec.baseline_cycles > 0:
        out += [f"{n}_drift" for n in names]
    if spec.history_mean:
        out += [f"{n}_histmean" for n in names]
    if spec.use_cycle:
        out.append("log_cycles")
    return out
