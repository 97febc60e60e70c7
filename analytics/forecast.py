"""Production forecast of a line: expected output per hour over the next hours, with an interval.

The model, in two steps (``docs/analytics.md``, "Production forecast"):

1. **Seasonal baseline.** For each future hour, the median of what the line made in the same
   hour of the day on the days of the same type (weekdays, Saturday, Sunday) one to
   ``profile_weeks`` weeks before. A median, so that a breakdown on one day does not drag
   the profile down, while a stop that recurs (a Sunday cleaning shift, the planned breaks)
   stays in it.
2. **Learned correction.** A robust (Huber) ridge regression of the baseline's error in hour
   ``h`` ahead on what is known at the forecast origin: the last hours' errors, and whether
   the line is down (stopped or in fault, and for how long) - each fading with ``h`` on a few
   time scales. Fitted on the line's own history, every origin in it a training case.

The 80 % interval is split-conformal: the model is fitted without the last ``calibration``
hours and its errors on them (per hour ahead, scaled by the baseline so that a cleaning
shift's zero gets a zero-wide band) give the quantiles; the same is done for the
cumulative output, which the order outlook needs (hourly bounds do not add up). A forecast
made while the line is in a fault takes its quantiles from the errors after the history's
faults instead (Mondrian: one class per state), each scored by a model fitted without it.

``forecast`` is pure: an ``HourlySeries`` in, a ``Forecast`` out, no database.
``analytics.forecast_db.forecast_line`` reads a line's series from telemetry and calls it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from analytics.errors import TooLittleDataError

__all__ = [
    "HOUR",
    "MIN_HISTORY_H",
    "WEEK_H",
    "Forecast",
    "ForecastConfig",
    "HourlySeries",
    "forecast",
    "seasonal_naive",
]

HOUR: Final = 3600.0
WEEK_H: Final = 168
_WARM_H: Final = WEEK_H + 24  # a training origin needs a baseline and a day of errors behind it
MIN_HISTORY_H: Final = 2 * WEEK_H
_DOWN_S: Final = 600.0  # down longer than this at the origin: not a short stop
_DECAYS: Final = (1.0, 4.0, 16.0)  # hours: how fast what is known at the origin fades
_LAG_COLUMNS: Final = 5  # the correction's first columns: the recent errors (noisy, so penalised)
_DOWN_WIDEN: Final = 5.0  # the band right after an origin in a stop, times the usual (fading over 4 h)
_FAULT_MIN: Final = 15  # fault origins the history needs for a band of their own (else the pooled one)
_FAULT_HOURS: Final = 6  # hours ahead whose hourly band comes from the fault's own scores

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class HourlySeries:
    """What a line made per hour: ``values[i]`` in hour ``start + i h`` (NaN: no data).

    ``state[i]`` is the line's state at the end of hour ``i`` (0 stopped, 1 running, 2 fault)
    and ``down_s[i]`` how long it had not been running by then (0 when running); both
    optional (without them the forecast knows only the counts)."""

    start: float  # epoch seconds, on a whole hour
    values: tuple[float, ...]
    state: tuple[int, ...] | None = None
    down_s: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.start % HOUR:
            raise ValueError(f"an hourly series starts on a whole hour, not at {self.start}")
        for name in ("state", "down_s"):
            other = getattr(self, name)
            if other is not None and len(other) != len(self.values):
                raise ValueError(f"{name} has {len(other)} hours, values {len(self.values)}")

    @property
    def end(self) -> float:
        """Where the next hour (the first forecast hour) starts."""
        return self.start + len(self.values) * HOUR


@dataclass(frozen=True, slots=True)
class ForecastConfig:
    level: float = 0.8  # of the prediction interval
    profile_weeks: int = 4
    ridge: float = 3.0  # penalty on the correction's weights, relative to the data's (chosen on seeds 1-2)
    calibration_h: int = 336  # at most; less on a short history
    day_types: tuple[int, ...] = (0, 0, 0, 0, 0, 1, 2)  # Monday..Sunday: days alike share a profile


@dataclass(frozen=True, slots=True)
class Forecast:
    """Hour ``k`` starts at ``times[k]``; ``expected``, ``lower``, ``upper`` are its output, the
    ``cum_*`` ones the output from ``times[0]`` to that hour's end. Units: the counter's."""

    times: tuple[float, ...]
    expected: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    cum_expected: tuple[float, ...]
    cum_lower: tuple[float, ...]
    cum_upper: tuple[float, ...]
    baseline: tuple[float, ...]  # the seasonal profile alone
    level: float

    def as_dict(self) -> dict[str, Any]:
        keys = ("start", "expected", "lower", "upper", "cum_expected", "cum_lower", "cum_upper")
        columns = (self.times, self.expected, self.lower, self.upper, self.cum_expected, self.cum_lower, self.cum_upper)
        return {"level": self.level, "hours": [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]}


def seasonal_naive(history: HourlySeries, horizon_h: int) -> Array:
    """The same hour a week earlier (the reference the forecast is scored against)."""
    y = np.asarray(history.values, dtype=np.float64)
    n = len(y)
    return np.array([y[n + h - WEEK_H] if n + h - WEEK_H >= 0 else np.nan for h in range(horizon_h)])


def _baseline(y: Array, until: int, weeks: int, first_hour: int, day_types: tuple[int, ...]) -> Array:
    """Baseline for hours 0 .. until-1 (past ones, then future ones): the median of the same hour
    of the day on the days of the same type (``day_types[weekday]``) between one and ``weeks``
    weeks before it, from observed hours only (NaN where there is none). At least a week back,
    so that a forecast up to a week ahead has seen every hour it uses."""
    n = len(y)
    days = range(7, 7 * weeks + 7)
    hours = np.arange(until)
    kind = np.asarray(day_types)[((first_hour + hours) // 24 + 3) % 7]  # 1970-01-01 was a Thursday
    lags = np.full((until, len(days)), np.nan)
    for col, d in enumerate(days):
        src = hours - 24 * d
        ok = (src >= 0) & (src < n)
        ok[ok] &= kind[src[ok]] == kind[ok]
        lags[ok, col] = y[src[ok]]
    out = np.full(until, np.nan)
    rows = (~np.isnan(lags)).any(axis=1)
    out[rows] = np.nanmedian(lags[rows], axis=1)
    return out


@dataclass(frozen=True, slots=True)
class _Prepared:
    y: Array
    base: Array  # length n + horizon
    resid: Array  # (y - base) / scale, NaN unknown
    fault: Array  # 1 where the line was in a fault longer than _DOWN_S at an hour's end
    stopped: Array
    down_h: Array
    scale: float


def _prepare(history: HourlySeries, horizon_h: int, weeks: int, day_types: tuple[int, ...]) -> _Prepared:
    y = np.asarray(history.values, dtype=np.float64)
    n = len(y)
    base = _baseline(y, n + horizon_h, weeks, round(history.start / HOUR), day_types)
    observed = y[~np.isnan(y)]
    scale = float(np.median(observed)) if observed.size else 0.0
    scale = scale if scale > 0 else max(float(np.max(observed, initial=0.0)), 1.0)
    resid = (y - base[:n]) / scale
    state = np.asarray(history.state if history.state is not None else [1] * n)
    down = np.asarray(history.down_s if history.down_s is not None else [0.0] * n, dtype=np.float64)
    long_down = down >= _DOWN_S
    fault = ((state == 2) & long_down).astype(np.float64)
    stopped = ((state == 0) & long_down).astype(np.float64)
    return _Prepared(y, base, resid, fault, stopped, np.log1p(down / HOUR) * long_down, scale)


def _median(values: Array) -> Array:
    """Median of the known values along the last axis (0 where none): one stop in the window
    does not move it."""
    known = ~np.isnan(values)
    out = np.zeros(values.shape[:-1])
    rows = known.any(axis=-1)
    out[rows] = np.nanmedian(values[rows], axis=-1)
    return out


def _features(p: _Prepared, origins: npt.NDArray[np.int64], hours: npt.NDArray[np.int64]) -> Array:
    """One row per (origin, hour ahead): origin ``i`` knows hours < i; the target is hour i + h - 1."""
    r = p.resid
    last = np.nan_to_num(r[origins - 1])
    recent = _median(np.stack([r[origins - k] for k in (1, 2, 3)], axis=-1))
    day = _median(np.stack([r[origins - k] for k in range(1, 25)], axis=-1))
    target = origins + hours - 1
    level = np.nan_to_num(p.base[target] / p.scale)
    fault, stopped, down = p.fault[origins - 1], p.stopped[origins - 1], p.down_h[origins - 1]
    d1, d4, d16 = (np.exp(-(hours - 1) / k) for k in _DECAYS)
    columns = [
        last * d1, last * d4, recent * d4, day * d16, day,
        fault * level * d1, fault * level * d4, fault * level * d16, fault * level * down * d4,
        stopped * level * d1, stopped * level * d4, stopped * level * down * d4,
    ]  # fmt: skip
    return np.stack(columns, axis=-1)


def _rows(p: _Prepared, first: int, last_target: int, horizon_h: int) -> tuple[Array, Array]:
    """Training rows: origins from ``first`` whose targets lie before ``last_target`` and are known."""
    grid = np.meshgrid(np.arange(first, last_target), np.arange(1, horizon_h + 1), indexing="ij")
    origins, hours = grid[0].ravel(), grid[1].ravel()
    target = origins + hours - 1
    keep = target < last_target
    origins, hours, target = origins[keep], hours[keep], target[keep]
    y = (p.y[target] - p.base[target]) / p.scale
    known = ~np.isnan(y)
    return _features(p, origins[known], hours[known]), y[known]


def _fit(x: Array, y: Array, ridge: float) -> Array:
    """Median (least absolute deviation) ridge regression by iteratively reweighted least
    squares: the forecast is scored by absolute error, and stops make the errors skewed, so
    the median, not the mean, is the point to aim at."""
    # Times the mean weight: the same pull every round. The state columns (after the first
    # _LAG_COLUMNS) are rare but strong, and shrinking them would throw away what they know.
    penalty = np.full(x.shape[1], ridge * len(y) / 1000.0)
    penalty[_LAG_COLUMNS:] *= 0.01
    weights = np.ones(len(y))
    beta = np.zeros(x.shape[1])
    floor = 0.01  # errors below 1 % of a usual hour weigh as if they were 1 %
    for _ in range(12):
        xw = x * weights[:, None]
        beta = np.asarray(np.linalg.solve(xw.T @ x + np.diag(penalty * weights.mean()), xw.T @ y), dtype=np.float64)
        weights = 1.0 / np.maximum(np.abs(y - x @ beta), floor)
    return beta


def _quantiles(errors: Array, level: float) -> tuple[float, float]:
    """Split-conformal bounds with the finite-sample correction."""
    m = len(errors)
    alpha = (1.0 - level) / 2.0
    lo = max(math.floor((m + 1) * alpha) / m, 0.0)
    hi = min(math.ceil((m + 1) * (1.0 - alpha)) / m, 1.0)
    return float(np.quantile(errors, lo, method="lower")), float(np.quantile(errors, hi, method="higher"))


def _bands(scores: list[Array], level: float) -> list[tuple[float, float]]:
    """Per hour ahead, quantiles of its scores pooled with its neighbours'; where too few,
    the last hour ahead that had enough."""
    out: list[tuple[float, float]] = []
    for h in range(len(scores)):
        width = max(1, h // 4)
        pooled = np.concatenate(scores[max(0, h - width) : h + width + 1])
        out.append(_quantiles(pooled, level) if len(pooled) >= 30 else out[-1] if out else (0.0, 0.0))
    return out


def _predict(p: _Prepared, beta: Array, origin: int, horizon_h: int) -> Array:
    hours = np.arange(1, horizon_h + 1)
    x = _features(p, np.full(horizon_h, origin), hours)
    base = np.nan_to_num(p.base[origin : origin + horizon_h])
    return np.maximum(base + p.scale * (x @ beta), 0.0)


def _spread(p: _Prepared, origins: npt.NDArray[np.int64], hours: npt.NDArray[np.int64]) -> Array:
    """What the conformal scores are scaled by: the baseline (never below a tenth of the usual
    hour), widened after an origin where the line is down: when a repair ends is the least
    certain thing there is, and scores from running hours would give it a band far too narrow."""
    base = np.maximum(np.nan_to_num(p.base[origins + hours - 1]), 0.1 * p.scale)
    down = np.maximum(p.fault[origins - 1], p.stopped[origins - 1])
    return np.asarray(base * (1.0 + _DOWN_WIDEN * down * np.exp(-(hours - 1) / _DECAYS[1])), dtype=np.float64)


Scores = tuple[list[Array], list[Array]]  # per hour ahead: hourly, cumulative


def _errors(p: _Prepared, beta: Array, origins: npt.NDArray[np.int64], horizon_h: int) -> Scores:
    """The model's errors over the spread from each of ``origins``, per hour ahead: hourly, and
    cumulative from the origin (up to the first unknown hour)."""
    n = len(p.y)
    origins, hours = np.meshgrid(origins, np.arange(1, horizon_h + 1), indexing="ij")
    target = origins + hours - 1
    inside = target < n
    some = int(origins.flat[0]) if origins.size else _WARM_H
    x = _features(p, np.where(inside, origins, some).ravel(), np.where(inside, hours, 1).ravel())
    base = np.nan_to_num(p.base[np.minimum(target, n - 1)])
    predicted = np.maximum(base + p.scale * (x @ beta).reshape(origins.shape), 0.0)
    actual = np.where(inside, p.y[np.minimum(target, n - 1)], np.nan)
    spread = _spread(p, np.where(inside, origins, some), np.where(inside, hours, 1))
    error = actual - predicted
    hourly = [col[~np.isnan(col)] for col in (error / spread).T]
    cumulative = np.cumsum(error, axis=1) / np.cumsum(spread, axis=1)  # NaN from the first unknown hour on
    return hourly, [col[~np.isnan(col)] for col in cumulative.T]


def _scores(p: _Prepared, beta: Array, split: int, horizon_h: int, *, in_fault: bool, ridge: float) -> Scores:
    """Conformal scores, by class (Mondrian). An origin not in a fault: the errors of the model
    fitted before ``split`` from the origins after it not in a fault either. An origin in a
    fault (over ``_DOWN_S``): the errors from every origin in a fault since the warm-up, since
    two weeks hold only a handful of breakdowns; each half of the history scored by the model
    fitted on the other half, so that no error is the model's own training case. After a fault
    the errors are of another kind - the repair is over (output near the profile) or it is not
    (near zero) - and a band from running hours, even widened, fits neither. That for the first
    ``_FAULT_HOURS`` hours ahead and for the cumulative output; past them, and with too few
    faults, the scores of all origins after ``split``, pooled."""
    n = len(p.y)
    if in_fault:
        everywhere = np.arange(_WARM_H, n)
        faults = everywhere[p.fault[everywhere - 1] == 1]
        mid = (_WARM_H + n) // 2
        early, late = faults[faults < mid], faults[faults >= mid]
        pooled = _errors(p, beta, np.arange(split, n), horizon_h)
        if len(early) and len(late) and len(faults) >= _FAULT_MIN:
            one = _errors(p, _fit(*_rows(p, mid, n, horizon_h), ridge), early, horizon_h)
            other = _errors(p, _fit(*_rows(p, _WARM_H, mid, horizon_h), ridge), late, horizon_h)
            hourly = [np.concatenate(pair) for pair in zip(one[0], other[0], strict=True)]
            cumulative = [np.concatenate(pair) for pair in zip(one[1], other[1], strict=True)]
            # Past the first hours the fault's own scores only widen the band (measured: the same
            # coverage at twice the width), but the cumulative output carries those hours along.
            return hourly[:_FAULT_HOURS] + pooled[0][_FAULT_HOURS:], cumulative
        return pooled
    later = np.arange(split, n)
    return _errors(p, beta, later[p.fault[later - 1] == 0], horizon_h)


def forecast(history: HourlySeries, horizon_h: int, config: ForecastConfig | None = None) -> Forecast:
    """Output of the line in each of the ``horizon_h`` hours after ``history`` (at most a week),
    with a ``config.level`` interval. Needs two weeks of history (``MIN_HISTORY_H``)."""
    cfg = config or ForecastConfig()
    if not 1 <= horizon_h <= WEEK_H:
        raise ValueError(f"horizon_h must be 1..{WEEK_H}, got {horizon_h}")
    n = len(history.values)
    if n < MIN_HISTORY_H:
        raise TooLittleDataError(f"a forecast needs {MIN_HISTORY_H} hours of history, got {n}")
    p = _prepare(history, horizon_h, cfg.profile_weeks, cfg.day_types)
    calib = min(cfg.calibration_h, n - _WARM_H - 72)
    split = n - calib
    beta = _fit(*_rows(p, _WARM_H, split, horizon_h), cfg.ridge)
    hourly, cumulative = _scores(p, beta, split, horizon_h, in_fault=bool(p.fault[n - 1]), ridge=cfg.ridge)
    beta = _fit(*_rows(p, _WARM_H, n, horizon_h), cfg.ridge)
    expected = _predict(p, beta, n, horizon_h)
    spread = _spread(p, np.full(horizon_h, n), np.arange(1, horizon_h + 1))
    band = np.array(_bands(hourly, cfg.level))
    cum_band = np.array(_bands(cumulative, cfg.level))
    cum_expected, cum_spread = np.cumsum(expected), np.cumsum(spread)
    lower = np.clip(expected + band[:, 0] * spread, 0.0, expected)
    upper = np.maximum(expected + band[:, 1] * spread, expected)
    cum_lower = np.clip(cum_expected + cum_band[:, 0] * cum_spread, 0.0, cum_expected)
    cum_upper = np.maximum(cum_expected + cum_band[:, 1] * cum_spread, cum_expected)
    times = tuple(history.end + h * HOUR for h in range(horizon_h))

    def floats(values: Array) -> tuple[float, ...]:
        return tuple(float(v) for v in values)

    return Forecast(
        times, floats(expected), floats(lower), floats(upper), floats(np.maximum.accumulate(cum_expected)),
        floats(np.maximum.accumulate(cum_lower)), floats(np.maximum.accumulate(cum_upper)),
        floats(np.nan_to_num(p.base[n : n + horizon_h])), cfg.level,
    )  # fmt: skip
