"""A line's production forecast from the database: the seam the MCP server calls.

``line_history`` turns a line's counter and state tags (``telemetry.sample``) into an
``HourlySeries`` with the OEE job's counter logic (``oee.counter_increase``: resets and
wrap-arounds), ``forecast_line`` forecasts from it (``analytics.forecast.forecast``, which
needs no database), and ``order_outlooks`` judges the line's production orders in progress
(``erp.work_order``) against that forecast.

    async with await connect(url) as conn:
        fc = await forecast_line(conn, "mill-a", "mill1", 24)     # Forecast: times, expected, lower, upper
        outlooks = await order_outlooks(conn, "mill-a", "mill1")  # [(order id, OrderOutlook)]
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass
from decimal import Decimal

from analytics.errors import TooLittleDataError
from analytics.forecast import HOUR, WEEK_H, Forecast, ForecastConfig, HourlySeries, forecast
from analytics.oee import Conn, LineConfig, OeeConfig, Series, counter_increase, line_tags, tag_series
from analytics.outlook import OrderOutlook, order_outlook, planned_end

__all__ = [
    "HISTORY_DAYS",
    "OpenOrder",
    "forecast_line",
    "hourly_series",
    "line_history",
    "order_outlooks",
    "recent_history",
]

HISTORY_DAYS = 35  # the profile's four weeks, and a week before them for the first one's errors

# The ERP has no due date on a work order: the due time is its planned end (start + planned
# quantity at the ideal rate: the order's own, else its product's, else the line's).
_ORDERS = """SELECT w.id, w.planned_quantity, w.produced_quantity, extract(epoch FROM w.started_at)::float8,
                    coalesce(w.ideal_rate, p.ideal_rate)
               FROM erp.work_order w JOIN erp.product p ON p.id = w.product_id
              WHERE w.kind = 'production' AND w.asset = %s AND w.status = 'in_progress'
              ORDER BY w.started_at, w.id"""


def _line(line: str | LineConfig, config: OeeConfig | None) -> LineConfig:
    if isinstance(line, LineConfig):
        return line
    for candidate in (config or OeeConfig()).lines:
        if candidate.name == line:
            return candidate
    raise TooLittleDataError(f"no line {line!r} is configured")


def hourly_series(line: LineConfig, counts: Series, states: Series, start: float, end: float) -> HourlySeries:
    """Hours from ``start`` to ``end`` (whole hours): the counter's increase in each (NaN when
    the counter has no reading at or before the hour's start, or none in the hour), and the
    state at each hour's end with how long the line had not been running then."""
    times = [t for t, _ in counts]
    first = times[0] if times else math.inf
    values: list[float] = []
    state: list[int] = []
    down: list[float] = []
    s, current, down_since = 0, 1, start  # state sample index, state in force, when it stopped running
    at = start
    while at < end:
        h1 = at + HOUR
        lo, hi = bisect.bisect_right(times, at), bisect.bisect_right(times, h1)
        window = counts[max(lo - 1, 0) : hi]  # the reading in force at the hour's start, then the hour's
        known = first <= at and hi > lo
        values.append(counter_increase(window, at, h1, line.counter_modulus, line.wrap_band) if known else math.nan)
        while s < len(states) and states[s][0] <= h1:
            value = int(states[s][1])
            if value not in line.running and current in line.running:
                down_since = states[s][0]
            current = value
            s += 1
        state.append(1 if current in line.running else current)
        down.append(0.0 if current in line.running else h1 - down_since)
        at = h1
    return HourlySeries(start, tuple(values), tuple(state), tuple(down))


async def line_history(conn: Conn, site: str, line: LineConfig, start: float, end: float) -> HourlySeries:
    """The line's hourly series at ``site`` over [start, end) (whole hours), from telemetry,
    without the hours before its counter's first reading and after its last."""
    here = line.model_copy(update={"site": site})
    ids = (await line_tags(conn, here, [line.count_tag, line.state_tag])).get(site, {})
    if line.count_tag not in ids:
        raise TooLittleDataError(f"line {line.name} has no counter {line.count_tag} at site {site}")
    counts = await tag_series(conn, ids[line.count_tag], start, end)
    states = await tag_series(conn, ids.get(line.state_tag, []), start, end)
    series = hourly_series(line, counts, states, start, end)
    known = [i for i, v in enumerate(series.values) if not math.isnan(v)]
    first, last = (known[0], known[-1] + 1) if known else (0, 0)  # without the hours before and after the data
    return HourlySeries(series.start + first * HOUR, series.values[first:last], (series.state or ())[first:last],
                        (series.down_s or ())[first:last])  # fmt: skip


async def forecast_line(
    conn: Conn, site: str, line: str | LineConfig, horizon_h: int, *, now: float | None = None,
    history_days: int = HISTORY_DAYS, config: ForecastConfig | None = None, oee: OeeConfig | None = None,
) -> Forecast:  # fmt: skip
    """The forecast of ``line`` (a name from the OEE config, or a LineConfig) at ``site`` for the
    ``horizon_h`` hours from the start of the current hour (``now``: the clock)."""
    history = await recent_history(conn, site, _line(line, oee), now=now, history_days=history_days)
    return forecast(history, min(horizon_h, WEEK_H), config)


async def recent_history(
    conn: Conn, site: str, line: LineConfig, *, now: float | None = None, history_days: int = HISTORY_DAYS
) -> HourlySeries:
    """The line's last ``history_days`` up to the start of the current hour, where a forecast
    made now starts; TooLittleDataError when its counter has no reading in the last whole hour."""
    end = math.floor((time.time() if now is None else now) / HOUR) * HOUR
    history = await line_history(conn, site, line, end - history_days * 24 * HOUR, end)
    if history.end != end:  # a gap at the end: the forecast would start in the past
        raise TooLittleDataError(f"line {line.name} at {site} has no counter data since {history.end}")
    return history


@dataclass(frozen=True, slots=True)
class OpenOrder:
    id: int
    planned: float
    produced: float
    started_at: float
    ideal_rate: float | None


async def order_outlooks(
    conn: Conn, site: str, line: str | LineConfig, *, now: float | None = None, horizon_h: int = WEEK_H,
    history_days: int = HISTORY_DAYS, config: ForecastConfig | None = None, oee: OeeConfig | None = None,
) -> list[tuple[int, OrderOutlook]]:  # fmt: skip
    """The line's production orders in progress, each judged against the forecast; orders
    share the output in the order they started (the first one's remainder comes first)."""
    cfg = _line(line, oee)
    cur = await conn.execute(_ORDERS, (cfg.name,))
    orders = [OpenOrder(int(i), float(p), float(d), float(s), float(r) if isinstance(r, Decimal | float) else None)
              for i, p, d, s, r in await cur.fetchall()]  # fmt: skip
    if not orders:
        return []
    fc = await forecast_line(conn, site, cfg, horizon_h, now=now, history_days=history_days, config=config)
    out: list[tuple[int, OrderOutlook]] = []
    queued = 0.0
    for order in orders:
        remaining = max(order.planned - order.produced, 0.0)
        due = planned_end(order.started_at, order.planned, order.ideal_rate or cfg.ideal_rate)
        out.append((order.id, order_outlook(fc, remaining, due, queued=queued)))
        queued += remaining
    return out
