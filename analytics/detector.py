"""The anomaly detector: one asset, all its numeric tags, trained on a healthy window.

The same code scores live telemetry (``analytics.live``) and SKAB files
(``analytics.skab``); docs/analytics.md has the measurements behind each choice.

1. **Smoothing.** Each tag goes through an exponentially weighted moving average
   (span ``smoothing`` samples). Faults in process plant are shifts that last, not
   single samples; averaging trades a few seconds of delay for much less noise.
2. **Standardising, with drift-widened limits.** Each smoothed tag is centred and scaled
   by its healthy mean and standard deviation. A tag whose level wanders (temperatures)
   cannot be judged by its level against a short healthy window, so its limits widen;
   two measurements of the healthy window decide which tags wander: their slow variation
   is large against their sample-to-sample noise (``drift_ratio``), *and* the means of
   the window's parts (``drift_blocks``) differ by much more than the variation inside
   each part (``shift_ratio``). The widening is the smaller of the two ratios over its
   line. A noisy tag fails the first test, a tag that swings through a fast cycle in
   every part of the window (a feed wave) the second; both keep tight limits.
3. **One multivariate score.** The squared Mahalanobis distance under the tags' healthy
   correlation (shrunk towards independence by ``shrinkage``) and the widened scales,
   divided by the alarm threshold: 1.0 is the alarm line. Its exact per-tag split,
   ``z_j * (P z)_j``, says which signal moved.
4. **Threshold and episodes.** The threshold is a quantile of the healthy window's own
   scores times a margin. An episode opens after ``open_after`` points above it and
   closes after ``close_after`` points below ``close_ratio`` of it, so one fault is one
   episode, not a flicker.
5. **Changes.** Beside the episodes, ``analytics.changepoint`` finds when a change began,
   on the unsmoothed standardised tags (``change_window``, ``change_factor``): these are
   the predicted changepoints SKAB's NAB score is taken on. An episode that opens is
   given, at that moment, the start of the latest change found within
   ``change_lookback`` rows, or else the likeliest split of the rows up to the opening;
   with ``backdate`` the episode's rows (``is_anomaly``) begin there, the alarm itself
   still at the opening (rows of earlier batches it takes in: ``Scores.earlier``).

Everything here is vectorised numpy (and scipy's IIR filter for the averages); a
``Stream`` carries the filter and episode state from one batch to the next, so scoring
one long block and scoring it in pieces give the same result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from scipy.signal import lfilter  # type: ignore[import-untyped]

from analytics.changepoint import SPAN, Changes, ChangeState, filled, find, split, statistic
from analytics.errors import NotFittedError, TooLittleDataError

__all__ = ["Detector", "DetectorConfig", "Model", "Scores", "Stream", "StreamState"]

Array = npt.NDArray[np.float64]
MODEL_VERSION: Final = 1
# The changepoint detector standardises by the healthy statistics of this average's span,
# whatever the episodes' ``smoothing``: its line and weights stay those it was validated with.
CHANGE_SPAN: Final = 10


class DetectorConfig(BaseModel):
    """One configuration for every asset and every SKAB file (no per-file tuning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    smoothing: int = Field(10, ge=1, le=10_000, description="EWMA span, in samples")
    drift_ratio: float = Field(0.5, gt=0, description="slow/fast variation above which a tag may drift")
    drift_blocks: int = Field(5, ge=2, le=50, description="parts the healthy window is cut into to see a drift")
    shift_ratio: float = Field(0.2, gt=0, description="spread of the parts' means, over the spread inside them, "
                               "above which a tag does drift")  # fmt: skip
    level_floor: float = Field(0.005, ge=0, lt=1, description="least scale of a tag, as a fraction of its "
                               "healthy level: smaller moves than this are not faults")  # fmt: skip
    shrinkage: float = Field(0.3, ge=0, le=1, description="weight of independence in the correlation")
    calibration: float = Field(0.0, ge=0, le=0.5, description="fraction of the healthy window, at its end, "
                               "held out of fitting; the alarm line is set on its scores (0: in-sample)")  # fmt: skip
    threshold_quantile: float = Field(0.99, gt=0, le=1, description="quantile of healthy scores")
    threshold_factor: float = Field(2.0, gt=0, description="margin over that quantile")
    open_after: int = Field(10, ge=1, description="points above the threshold that open an episode")
    close_ratio: float = Field(0.8, gt=0, le=1, description="fraction of the threshold the score must fall below")
    close_after: int = Field(5, ge=1, description="points below it that close an episode")
    backdate: bool = Field(default=True, description="an episode's rows begin where its change began (as estimated "
                           "when it opens), not at its opening")  # fmt: skip
    min_train_rows: int = Field(60, ge=10, description="fewest healthy rows a model is trained on")
    change_window: int = Field(30, ge=2, le=1000, description="rows in each of the two windows whose means "
                               "the changepoint detector compares")  # fmt: skip
    change_factor: float = Field(1.5, gt=0, description="margin over the healthy window's largest change "
                                 "statistic: the changepoint line")  # fmt: skip

    @property
    def change_lookback(self) -> int:
        """Rows before an episode opens in which a change found is taken as its beginning:
        the changepoint detector's delay plus the averages' (three spans) and the opening's."""
        return 2 * self.change_window + 3 * self.smoothing + self.open_after


@dataclass(frozen=True, slots=True)
class Model:
    """What training learned; serialisable, so the live job keeps it in the database."""

    tags: tuple[str, ...]
    mean: Array
    scale: Array  # healthy standard deviation of the smoothed tag
    widen: Array  # >= 1: drift widening of each tag's limits
    precision: Array  # inverse of the widened, shrunk correlation
    threshold: float  # raw Mahalanobis distance that is the alarm line
    last: Array  # smoothed values at the end of the healthy window
    excluded: tuple[str, ...] = ()  # tags left out: constant or empty while healthy
    change_line: float = float("inf")  # the changepoint statistic's line (inf: a model from before it)
    recent: Array = field(default_factory=lambda: np.zeros((0, 0)))  # standardised rows at the window's end
    change_scale: Array | None = None  # the changepoint detector's scale per tag (None: ``scale``)
    change_precision: Array | None = None  # ... and its precision (None: ``precision``)

    def to_json(self) -> str:
        return json.dumps({
            "version": MODEL_VERSION, "tags": list(self.tags), "mean": self.mean.tolist(),
            "scale": self.scale.tolist(), "widen": self.widen.tolist(), "precision": self.precision.tolist(),
            "threshold": self.threshold, "last": self.last.tolist(), "excluded": list(self.excluded),
            "change_line": self.change_line, "recent": self.recent.tolist(),
            "change_scale": _listed(self.change_scale), "change_precision": _listed(self.change_precision),
        })  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Model:
        data: dict[str, Any] = json.loads(text)
        if data.get("version") != MODEL_VERSION:
            raise NotFittedError(f"stored model version {data.get('version')!r}, this code reads {MODEL_VERSION}")
        return cls(
            tags=tuple(data["tags"]), mean=np.array(data["mean"]), scale=np.array(data["scale"]),
            widen=np.array(data["widen"]), precision=np.array(data["precision"]),
            threshold=float(data["threshold"]), last=np.array(data["last"]), excluded=tuple(data["excluded"]),
            change_line=float(data.get("change_line", "inf")),
            recent=np.array(data.get("recent", []), dtype=np.float64).reshape(-1, len(data["tags"])),
            change_scale=_array(data.get("change_scale")), change_precision=_array(data.get("change_precision")),
        )  # fmt: skip

    @property
    def changes_by(self) -> tuple[Array, Array]:
        """The changepoint detector's scale and precision (a model stored before they were
        kept apart: the episodes' own)."""
        return (self.scale if self.change_scale is None else self.change_scale,
                self.precision if self.change_precision is None else self.change_precision)  # fmt: skip


def _listed(values: Array | None) -> list[Any] | None:
    return None if values is None else values.tolist()


def _array(values: list[Any] | None) -> Array | None:
    return None if values is None else np.array(values, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Scores:
    """One batch scored: a row per input row."""

    score: Array  # Mahalanobis distance / threshold (1.0 = alarm line)
    is_anomaly: npt.NDArray[np.bool_]  # inside an episode (with ``backdate``, from its change's start)
    contributions: Array  # rows x tags, sums to score
    z: Array  # rows x tags, standardised smoothed values (before widening)
    opened: list[int] = field(default_factory=list)  # row indexes where an episode opened
    closed: list[int] = field(default_factory=list)  # row indexes where an episode closed
    changes: list[int] = field(default_factory=list)  # estimated row a change began (< 0: an earlier batch)
    changes_found: list[int] = field(default_factory=list)  # row where each was found
    opened_from: list[int] = field(default_factory=list)  # per opening: the row its change began (< 0: earlier)
    earlier: int = 0  # with ``backdate``: rows at the end of earlier batches that an opening here takes in


@dataclass(slots=True)
class StreamState:
    """Carried between batches: the averages and the episode state machine."""

    smoothed: Array
    active: bool = False
    run_above: int = 0
    run_below: int = 0
    change: ChangeState | None = None  # None: start from the model's window end
    since_change: int | None = None  # rows since the latest change began, at the end of the last batch

    def to_dict(self) -> dict[str, Any]:
        return {"smoothed": self.smoothed.tolist(), "active": self.active,
                "run_above": self.run_above, "run_below": self.run_below,
                "change": None if self.change is None else self.change.to_dict(),
                "since_change": self.since_change}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamState:
        smoothed = np.array(data["smoothed"], dtype=np.float64)
        change = data.get("change")
        since = data.get("since_change")
        return cls(smoothed, bool(data["active"]), int(data["run_above"]), int(data["run_below"]),
                   None if change is None else ChangeState.from_dict(change, smoothed.size),
                   None if since is None else int(since))  # fmt: skip


def _alpha(span: int) -> float:
    return 2.0 / (span + 1.0)


def ewma(rows: Array, span: int, start: Array) -> Array:
    """Exponentially weighted average down the rows, continuing from ``start``; NaN rows hold."""
    alpha = _alpha(span)
    if np.isnan(np.add.reduce(rows, axis=None)):  # a missing value holds the average for that tag
        return _ewma_holes(rows, alpha, start)
    out, _ = lfilter([alpha], [1.0, alpha - 1.0], rows, axis=0, zi=((1.0 - alpha) * start)[np.newaxis, :])
    return np.asarray(out, dtype=np.float64)


def _ewma_holes(values: Array, alpha: float, start: Array) -> Array:
    out = np.empty_like(values)
    current = start.copy()
    for i, row in enumerate(values):
        seen = ~np.isnan(row)
        current[seen] += alpha * (row[seen] - current[seen])
        out[i] = current
    return out


def _run_lengths(flags: npt.NDArray[np.bool_], carry: int) -> npt.NDArray[np.int64]:
    """Length of the run of True ending at each row (0 where False), continuing ``carry``."""
    idx = np.arange(1, flags.size + 1)
    last_false = np.maximum.accumulate(np.where(flags, 0, idx))
    runs = idx - last_false
    runs[last_false == 0] += carry  # still inside the run that started before this batch
    return runs.astype(np.int64)


class Detector:
    """Train with ``fit`` on healthy rows (rows x tags); score with ``stream().update``."""

    def __init__(self, config: DetectorConfig, tags: Sequence[str], model: Model | None = None) -> None:
        self.config = config
        self.tags = tuple(tags)
        self.model = model

    def fit(self, rows: npt.ArrayLike) -> Detector:
        """Learn from healthy rows. A row where every tag is NaN (the asset was out of its
        operating mode) holds the averages and is left out of the statistics."""
        everything = np.asarray(rows, dtype=np.float64)
        cfg = self.config
        if everything.ndim != 2 or everything.shape[1] != len(self.tags):
            raise TooLittleDataError(f"training data must be rows x {len(self.tags)} tags, got {everything.shape}")
        held = int(everything.shape[0] * cfg.calibration)
        data, tail = everything[: everything.shape[0] - held], everything[everything.shape[0] - held :]
        present = ~np.all(np.isnan(data), axis=1)
        if np.count_nonzero(present) < cfg.min_train_rows:
            raise TooLittleDataError(f"{np.count_nonzero(present)} healthy rows, at least {cfg.min_train_rows} needed")
        burn = min(cfg.smoothing, data.shape[0] // 4)
        usable = [j for j in range(data.shape[1]) if np.count_nonzero(~np.isnan(data[:, j])) >= cfg.min_train_rows]
        first = np.array([data[~np.isnan(data[:, j]), j][0] if j in usable else 0.0 for j in range(data.shape[1])])
        smoothed = ewma(data, cfg.smoothing, first)
        settled = smoothed[burn:][present[burn:]]
        scale = np.std(settled, axis=0)
        keep = [j for j in usable if scale[j] > 1e-12 * max(1.0, abs(float(np.mean(settled[:, j]))))]
        if not keep:
            raise TooLittleDataError("no tag varies in the healthy window")
        dropped = tuple(t for j, t in enumerate(self.tags) if j not in keep)
        self.tags = tuple(self.tags[j] for j in keep)
        model = self._model(settled[:, keep], data[burn:, keep], smoothed[-1, keep], dropped)
        by = model.scale, model.precision
        if cfg.smoothing != CHANGE_SPAN:
            skip = min(CHANGE_SPAN, data.shape[0] // 4)
            at_span = ewma(data, CHANGE_SPAN, first)[skip:][present[skip:]]
            _, scale, _, precision = self._standardisation(at_span[:, keep], data[skip:, keep])
            by = scale, precision
        self.model = self._changes(model, data[:, keep][present], *by)
        if np.any(~np.all(np.isnan(tail), axis=1)):
            self.model = self._calibrated(self.model, tail[:, keep])
        return self

    def _changes(self, model: Model, healthy: Array, scale: Array, precision: Array) -> Model:
        """The changepoint line: the largest change statistic of the healthy rows, times the margin."""
        w = self.config.change_window
        z = filled((healthy - model.mean) / scale, np.zeros(model.mean.size))
        d = statistic(z, precision, w)
        seen = d[~np.isnan(d)]
        line = float(seen.max()) * self.config.change_factor if seen.size else float("inf")
        return replace(model, change_line=max(line, 1e-12), recent=z[-(SPAN * w - 1) :].copy(),
                       change_scale=scale, change_precision=precision)  # fmt: skip

    def _calibrated(self, model: Model, tail: Array) -> Model:
        """The alarm line from rows the model was not fitted on (a split-conformal quantile):
        how far healthy data the model has never seen strays, drift included, rather than
        how well the model fits its own rows."""
        cfg = self.config
        stream = Stream(cfg, model, StreamState(model.last.copy()))
        raw = stream.update(tail).score[~np.all(np.isnan(tail), axis=1)] * model.threshold
        threshold = float(np.quantile(raw, cfg.threshold_quantile)) * cfg.threshold_factor
        return replace(
            model,
            threshold=max(threshold, 1e-12),
            last=stream.state.smoothed.copy(),
            recent=stream.state.change.recent.copy() if stream.state.change else model.recent,
        )

    def _model(self, settled: Array, raw: Array, last: Array, dropped: tuple[str, ...]) -> Model:
        cfg = self.config
        mean, scale, widen, precision = self._standardisation(settled, raw)
        z = (settled - mean) / scale
        healthy = np.einsum("ij,jk,ik->i", z, precision, z)
        threshold = float(np.quantile(healthy, cfg.threshold_quantile)) * cfg.threshold_factor
        return Model(tags=self.tags, mean=mean, scale=scale, widen=widen, precision=precision,
                     threshold=max(threshold, 1e-12), last=last, excluded=dropped)  # fmt: skip

    def _standardisation(self, settled: Array, raw: Array) -> tuple[Array, Array, Array, Array]:
        """Each tag's mean, scale (floored) and drift widening, and the precision of the
        widened, shrunk correlation, from the smoothed healthy rows and the raw ones."""
        cfg = self.config
        mean, scale = settled.mean(axis=0), settled.std(axis=0)
        tiny = 1e-12 * scale
        noise = np.nan_to_num(np.nanstd(np.diff(raw, axis=0), axis=0) / np.sqrt(2.0))  # sample to sample
        slow_over_fast = scale / np.maximum(noise, tiny)
        blocks = np.array_split(settled, cfg.drift_blocks)
        spread = np.std([b.mean(axis=0) for b in blocks], axis=0)
        within = np.sqrt(np.mean([b.var(axis=0) for b in blocks], axis=0))
        between_over_within = spread / np.maximum(within, tiny)
        widen = np.maximum(1.0, np.minimum(slow_over_fast / cfg.drift_ratio, between_over_within / cfg.shift_ratio))
        scale = np.maximum(scale, cfg.level_floor * np.abs(mean))
        z = (settled - mean) / scale
        corr = np.corrcoef(z, rowvar=False) if len(mean) > 1 else np.ones((1, 1))
        corr = (1.0 - cfg.shrinkage) * np.nan_to_num(corr) + cfg.shrinkage * np.eye(len(mean))
        return mean, scale, widen, np.linalg.pinv(corr * np.outer(widen, widen), hermitian=True)

    def stream(self, state: StreamState | None = None) -> Stream:
        if self.model is None:
            raise NotFittedError("fit the detector (or load a model) before scoring")
        return Stream(self.config, self.model, state or StreamState(self.model.last.copy()))


class Stream:
    """Scores batches in time order, carrying the averages and the episode across batches."""

    def __init__(self, config: DetectorConfig, model: Model, state: StreamState) -> None:
        self.config = config
        self.model = model
        self.state = state

    def update(self, rows: npt.ArrayLike) -> Scores:
        data = np.asarray(rows, dtype=np.float64)
        m, cfg, st = self.model, self.config, self.state
        if data.ndim != 2 or data.shape[1] != len(m.tags):
            raise ValueError(f"rows must be n x {len(m.tags)} (tags {', '.join(m.tags)}), got {data.shape}")
        if data.shape[0] == 0:
            empty = np.zeros((0, len(m.tags)))
            return Scores(np.zeros(0), np.zeros(0, dtype=bool), empty, empty)
        changes, standardised = self._changes(data)
        z = ewma(data, cfg.smoothing, st.smoothed)
        st.smoothed = z[-1].copy()
        z -= m.mean  # in place from here on: these arrays are rows x tags, and large in a backlog
        z /= m.scale
        contributions = z @ m.precision
        contributions *= z
        contributions *= 1.0 / m.threshold
        score = contributions @ np.ones(contributions.shape[1])
        active, opened, closed = self._episodes(score)
        since = self.state.since_change
        starts = np.array(changes.started, dtype=np.int64)
        found = np.array(changes.found, dtype=np.int64)
        carried = standardised.shape[0] - data.shape[0]
        opened_from = [self._began(i, starts, found, since, standardised[: carried + i + 1]) - carried for i in opened]
        earlier = 0
        if cfg.backdate:
            for i, began in zip(opened, opened_from, strict=True):
                active[max(began, 0) : i] = True
                earlier = max(earlier, -began)
        if starts.size:
            self.state.since_change = int(data.shape[0] - starts[-1])
        elif since is not None:
            self.state.since_change = since + data.shape[0]
        return Scores(score, active, contributions, z, opened, closed, changes.started, changes.found, opened_from,
                      earlier)  # fmt: skip

    def _changes(self, data: Array) -> tuple[Changes, Array]:
        """The batch's changes, and its standardised rows after the carried ones."""
        m, st = self.model, self.state
        if st.change is None:
            st.change = ChangeState(m.recent.copy() if m.recent.size else np.zeros((0, len(m.tags))))
        before = st.change.recent
        seed = before[-1] if before.shape[0] else np.zeros(len(m.tags))
        scale, precision = m.changes_by
        z = filled((data - m.mean) / scale, seed)
        return find(z, precision, self.config.change_window, m.change_line, st.change), np.vstack([before, z])

    def _began(self, opened: int, starts: npt.NDArray[np.int64], found: npt.NDArray[np.int64],
               since: int | None, upto: Array) -> int:  # fmt: skip
        """When the change behind an episode opening at row ``opened`` began, as known then,
        counted from the first row of ``upto`` (the standardised rows up to the opening, the
        carried ones first): the start of the latest change found, if within the lookback;
        else the likeliest split of those rows."""
        known = starts[found <= opened]
        latest = int(known[-1]) if known.size else (None if since is None else -since)
        carried = int(upto.shape[0]) - opened - 1
        if latest is not None and opened - latest <= self.config.change_lookback:
            return latest + carried
        first = max(0, int(upto.shape[0]) - SPAN * self.config.change_window)
        return split(upto[first:], self.model.changes_by[1], self.config.change_window) + first

    def _episodes(self, score: Array) -> tuple[npt.NDArray[np.bool_], list[int], list[int]]:
        cfg, st = self.config, self.state
        above = _run_lengths(score > 1.0, st.run_above)
        below = _run_lengths(score < cfg.close_ratio, st.run_below)
        idx = np.arange(score.size)
        on_at = np.maximum.accumulate(np.where(above >= cfg.open_after, idx, -1))
        off_at = np.maximum.accumulate(np.where(below >= cfg.close_after, idx, -1))
        active = np.where((on_at < 0) & (off_at < 0), st.active, on_at > off_at)
        before = np.concatenate(([st.active], active[:-1]))
        opened = np.flatnonzero(active & ~before).tolist()
        closed = np.flatnonzero(~active & before).tolist()
        st.active, st.run_above, st.run_below = bool(active[-1]), int(above[-1]), int(below[-1])
        return active.astype(bool), opened, closed
