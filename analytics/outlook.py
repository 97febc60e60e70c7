"""What a production forecast says about open orders and maintenance windows.

``order_outlook``: will an order's remaining quantity be made by its due time? The
forecast's cumulative output (expected, and its calibrated interval) is walked until it
reaches the remaining quantity: the expected finish, the earliest (upper bound) and the
latest (lower bound). The on-time probability treats the cumulative output at the due time
as normal with the interval's median and width (a 80 % interval is +- 1.28 sigma).

``lowest_loss_window``: where, before a deadline (a predicted failure), a maintenance stop
of ``duration_h`` hours loses the least expected production.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

from analytics.forecast import HOUR, Forecast

__all__ = ["MaintenanceWindow", "OrderOutlook", "lowest_loss_window", "order_outlook", "planned_end"]

Verdict = Literal["done", "on_time", "at_risk", "late"]


@dataclass(frozen=True, slots=True)
class OrderOutlook:
    """Times are epoch seconds; a finish time is None when the forecast's horizon ends first."""

    remaining: float
    due: float
    expected_finish: float | None
    earliest_finish: float | None  # at the interval's upper output
    latest_finish: float | None  # at its lower output
    on_time_probability: float
    verdict: Verdict  # on_time: even the lower output makes it; late: not even the upper one
    horizon_end: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def planned_end(started_at: float, planned: float, ideal_rate: float) -> float:
    """An order's due time when the ERP has none: its start plus the planned quantity at the ideal rate."""
    return started_at + planned / ideal_rate * HOUR


def _crossing(forecast: Forecast, cumulative: tuple[float, ...], quantity: float) -> float | None:
    """When ``cumulative`` output reaches ``quantity``, output spread evenly over each hour."""
    before = 0.0
    for start, total in zip(forecast.times, cumulative, strict=True):
        if total >= quantity:
            made = total - before
            return start + (HOUR * (quantity - before) / made if made > 0 else 0.0)
        before = total
    return None


def _at(forecast: Forecast, cumulative: tuple[float, ...], when: float) -> float:
    """Cumulative output from the first forecast hour until ``when`` (inside the horizon)."""
    before = 0.0
    for start, total in zip(forecast.times, cumulative, strict=True):
        if when <= start + HOUR:
            return before + (total - before) * max(0.0, when - start) / HOUR
        before = total
    return before


def order_outlook(forecast: Forecast, remaining: float, due: float, *, queued: float = 0.0) -> OrderOutlook:
    """The outlook of an order with ``remaining`` units to make by ``due``, from ``forecast``
    (which starts where the order's produced quantity was counted), after ``queued`` units of
    orders ahead of it on the line. A due time past the horizon is judged at the horizon's
    end: the probability is then a lower bound."""
    horizon_end = forecast.times[-1] + HOUR if forecast.times else due
    if remaining <= 0:
        return OrderOutlook(max(remaining, 0.0), due, None, None, None, 1.0, "done", horizon_end)
    target = queued + remaining
    expected = _crossing(forecast, forecast.cum_expected, target)
    earliest = _crossing(forecast, forecast.cum_upper, target)
    latest = _crossing(forecast, forecast.cum_lower, target)
    at = min(due, horizon_end)
    if not forecast.times or at <= forecast.times[0]:
        probability = 0.0
    else:
        mid = _at(forecast, forecast.cum_expected, at)
        low, high = _at(forecast, forecast.cum_lower, at), _at(forecast, forecast.cum_upper, at)
        z = NormalDist().inv_cdf((1.0 + forecast.level) / 2.0)
        sigma = (high - low) / (2.0 * z)
        probability = (1.0 if mid >= target else 0.0) if sigma <= 0 else 1.0 - NormalDist(mid, sigma).cdf(target)
    if latest is not None and latest <= due:
        verdict: Verdict = "on_time"
    elif (earliest is None and due <= horizon_end) or (earliest is not None and earliest > due):
        verdict = "late"
    else:
        verdict = "at_risk"
    return OrderOutlook(remaining, due, expected, earliest, latest, probability, verdict, horizon_end)


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    start: float
    end: float
    expected_loss: float  # the output the forecast expects in the window
    upper_loss: float  # at the interval's upper output

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lowest_loss_window(forecast: Forecast, duration_h: int, before: float) -> MaintenanceWindow | None:
    """The ``duration_h``-hour window, on whole forecast hours and ending by ``before``, in which
    the line is expected to make the least (the earliest such one); None when none fits."""
    if duration_h < 1:
        raise ValueError(f"duration_h must be at least 1, got {duration_h}")
    best: MaintenanceWindow | None = None
    for k in range(len(forecast.times) - duration_h + 1):
        start = forecast.times[k]
        end = start + duration_h * HOUR
        if end > before:
            break
        loss = sum(forecast.expected[k : k + duration_h])
        if best is None or loss < best.expected_loss:
            best = MaintenanceWindow(start, end, loss, sum(forecast.upper[k : k + duration_h]))
    return best
