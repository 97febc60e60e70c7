"""Rolling-origin backtest of the production forecast on simulated history.

The history is ``simulator.production.hourly_production`` (the live simulator's rates and
stop process, plus the weeks-scale calendar and breakdowns it documents). From the end of
the warm-up on, every ``step_h`` hours is a forecast origin: the forecast sees only the
hours before it and predicts the next ``horizon_h``; so does the seasonal-naive forecast
(the same hour a week earlier). Scores, over every origin and hour ahead:

- **MASE**: mean absolute error over the in-sample mean absolute error of the seasonal-naive
  forecast on the history before the origin (Hyndman and Koehler 2006), averaged over origins.
  The seasonal-naive forecast itself scores about 1; below 1 beats it.
- **relative MAE**: the forecast's MAE over the seasonal-naive forecast's on the same hours.
- **coverage**: share of actual hours inside the 80 % interval (and of cumulative outputs
  inside the cumulative interval).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analytics.forecast import WEEK_H, Forecast, ForecastConfig, HourlySeries, forecast, seasonal_naive
from simulator.production import hourly_production

__all__ = ["BacktestReport", "Window", "backtest", "plot_window"]


@dataclass(frozen=True, slots=True)
class Window:
    """One origin's forecast next to what happened, for the plot."""

    origin: float
    past: tuple[float, ...]  # the day before the origin
    actual: tuple[float, ...]
    naive: tuple[float, ...]
    forecast: Forecast
    fault_at_origin: bool  # the line had been in a fault for over 10 minutes


@dataclass(slots=True)
class BacktestReport:
    line: str
    weeks: int
    seed: int
    horizon_h: int
    step_h: int
    warmup_weeks: int
    origins: int = 0
    hours: int = 0
    mase: float = float("nan")
    mase_naive: float = float("nan")
    mase_baseline: float = float("nan")  # the seasonal profile without the learned correction
    relative_mae: float = float("nan")
    mae: float = float("nan")
    mae_naive: float = float("nan")
    coverage: float = float("nan")
    cum_coverage: float = float("nan")
    mean_width: float = float("nan")
    down_origins: int = 0  # origins at which the line had been in a breakdown for over 10 minutes
    coverage_down: float | None = None  # the interval's coverage over the first 4 hours after those
    coverage_down_by_hour: list[float] = field(default_factory=list)  # ... and per hour ahead, all of them
    level: float = 0.8
    windows: list[Window] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("windows")
        return out

    def as_text(self) -> str:
        return (
            f"production forecast backtest: {self.line}, {self.weeks} weeks (seed {self.seed}), "
            f"{self.origins} origins every {self.step_h} h after {self.warmup_weeks} weeks, "
            f"{self.horizon_h} h ahead ({self.hours} hours scored)\n"
            f"  MASE {self.mase:.3f} (seasonal naive {self.mase_naive:.3f}, profile alone {self.mase_baseline:.3f})\n"
            f"  MAE {self.mae:.1f} vs seasonal naive {self.mae_naive:.1f}: relative MAE {self.relative_mae:.3f}\n"
            f"  {self.level:.0%} interval coverage {self.coverage:.3f} (cumulative {self.cum_coverage:.3f}), "
            f"mean width {self.mean_width:.1f}\n"
            f"  after the {self.down_origins} origins in a breakdown: coverage "
            f"{'-' if self.coverage_down is None else f'{self.coverage_down:.3f}'} (4 h ahead)"
        )


def _down_coverage(inside: list[list[bool]]) -> tuple[float | None, list[float]]:
    """Coverage after the origins in a breakdown: over the first 4 hours ahead, and per hour ahead."""
    if not inside:
        return None, []
    hits = np.asarray(inside, dtype=np.float64)
    return float(hits[:, :4].mean()), [round(float(v), 4) for v in hits.mean(axis=0)]


def backtest(
    *, weeks: int = 8, seed: int = 1, line: str = "mill1", horizon_h: int = 24, step_h: int = 7,
    warmup_weeks: int = 3, config: ForecastConfig | None = None, progress: Callable[[int, int], None] | None = None,
) -> BacktestReport:  # fmt: skip
    """Score the forecast on ``weeks`` of simulated history (``progress(done, total)`` per origin)."""
    if weeks <= warmup_weeks:
        raise ValueError(f"weeks ({weeks}) must exceed the warm-up ({warmup_weeks})")
    cfg = config or ForecastConfig()
    sim = hourly_production(line, weeks=weeks, seed=seed)
    y = np.asarray(sim.produced)
    origins = list(range(warmup_weeks * WEEK_H, len(y) - horizon_h + 1, step_h))
    report = BacktestReport(line, weeks, seed, horizon_h, step_h, warmup_weeks, level=cfg.level)
    scaled: list[float] = []
    scaled_naive: list[float] = []
    scaled_base: list[float] = []
    errors: list[float] = []
    errors_naive: list[float] = []
    inside: list[bool] = []
    cum_inside: list[bool] = []
    widths: list[float] = []
    by_hour_down: list[list[bool]] = []
    for done, origin in enumerate(origins, 1):
        history = HourlySeries(sim.start, sim.produced[:origin], sim.state[:origin], sim.down_s[:origin])
        result = forecast(history, horizon_h, cfg)
        naive = seasonal_naive(history, horizon_h)
        actual = y[origin : origin + horizon_h]
        scale = float(np.mean(np.abs(y[WEEK_H:origin] - y[: origin - WEEK_H])))
        err = np.abs(actual - np.asarray(result.expected))
        err_naive = np.abs(actual - naive)
        scaled.append(err.mean() / scale)
        scaled_naive.append(err_naive.mean() / scale)
        scaled_base.append(np.abs(actual - np.asarray(result.baseline)).mean() / scale)
        errors.extend(err)
        errors_naive.extend(err_naive)
        inside.extend((np.asarray(result.lower) <= actual) & (actual <= np.asarray(result.upper)))
        cum = np.cumsum(actual)
        cum_inside.extend((np.asarray(result.cum_lower) <= cum) & (cum <= np.asarray(result.cum_upper)))
        widths.extend(np.asarray(result.upper) - np.asarray(result.lower))
        past = sim.produced[origin - 24 : origin]
        observed, reference = tuple(float(v) for v in actual), tuple(float(v) for v in naive)
        fault = sim.state[origin - 1] == 2 and sim.down_s[origin - 1] > 600
        report.windows.append(Window(sim.start + origin * 3600.0, past, observed, reference, result, fault))
        if fault:
            report.down_origins += 1
            by_hour_down.append(inside[-horizon_h:])
        if progress:
            progress(done, len(origins))
    report.origins, report.hours = len(origins), len(errors)
    report.mase, report.mase_naive = float(np.mean(scaled)), float(np.mean(scaled_naive))
    report.mase_baseline = float(np.mean(scaled_base))
    report.mae, report.mae_naive = float(np.mean(errors)), float(np.mean(errors_naive))
    report.relative_mae = report.mae / report.mae_naive
    report.coverage, report.cum_coverage = float(np.mean(inside)), float(np.mean(cum_inside))
    report.mean_width = float(np.mean(widths))
    report.coverage_down, report.coverage_down_by_hour = _down_coverage(by_hour_down)
    return report


def pick_window(report: BacktestReport) -> Window:
    """The window where the forecast and the seasonal-naive one differ most, among those that
    start in a breakdown if any do: the instructive one."""

    def gap(w: Window) -> float:
        return float(np.abs(np.asarray(w.forecast.expected) - np.asarray(w.naive)).sum())

    return max([w for w in report.windows if w.fault_at_origin] or report.windows, key=gap)


def plot_window(report: BacktestReport, path: Path, window: Window | None = None) -> Window:
    """A PNG of one backtest origin: the day before, then actual vs forecast, interval and naive."""
    import matplotlib as mpl  # noqa: PLC0415  (half a second, for the plot only)

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415  (after the backend is chosen)

    w = window or pick_window(report)
    fig, ax = plt.subplots(figsize=(11, 4.5))

    def steps(start: int, values: tuple[float, ...], **style: Any) -> None:
        """Each hour as a flat step over its whole width, the last one included."""
        x = np.arange(start, start + len(values) + 1)
        ax.stairs(values, x, **style)

    try:
        ahead = np.arange(len(w.actual) + 1)
        ax.fill_between(ahead, [*w.forecast.lower, w.forecast.lower[-1]], [*w.forecast.upper, w.forecast.upper[-1]],
                        step="post", color="tab:blue", alpha=0.2, label=f"{w.forecast.level:.0%} interval")  # fmt: skip
        steps(-len(w.past), w.past, color="grey", label="history")
        steps(0, w.actual, color="black", linewidth=1.6, label="actual")
        steps(0, w.forecast.expected, color="tab:blue", linewidth=1.6, label="forecast")
        steps(0, w.naive, color="tab:orange", linestyle="--", label="seasonal naive (a week ago)")
        ax.axvline(0, color="grey", linestyle=":")
        start = np.datetime64(int(w.origin), "s")
        state = ", line in a breakdown at the origin" if w.fault_at_origin else ""
        ax.set(xlabel=f"hours from the forecast origin ({start} UTC{state})", ylabel="produced per hour",
               title=f"{report.line}: backtest window (MASE over all origins {report.mase:.2f}, "
                     f"coverage {report.coverage:.0%})")  # fmt: skip
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return w
