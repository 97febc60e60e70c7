"""OEE per line and shift, and per hour of each shift, from machine state and counter tags.

Availability is run time over planned time (the shift minus its planned breaks, only up
to now for the shift in progress); performance is the ideal cycle time times the count
over run time; quality is good over total count. The stops behind the availability loss
go to ``analytics.oee_loss`` by reason (the state's name, ``microstop`` for short ones,
``no_data`` before the first state sample) for a Pareto chart.

The ideal rate comes from the ERP when it knows it (``ideal_rate``): the production work
order running on the line in the bucket, else that order's product, else the product the
line is configured with (``LineConfig.product``); only then the line's configured rate.
Each row names the production work order that ran on the line last in its bucket
(``running_work_order``; the production-counts job, ``analytics.counts``, posts to the same
order).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import psycopg
from pydantic import BaseModel, ConfigDict, Field, model_validator

from factory.configfile import load_yaml_model

__all__ = [
    "BucketResult",
    "CountsConfig",
    "ForecastJobConfig",
    "LineConfig",
    "OeeConfig",
    "OeeJob",
    "OeeSummary",
    "PlannedBreak",
    "RunningOrder",
    "Shift",
    "ShiftCalendar",
    "ShiftWindow",
    "Timeline",
    "compute_bucket",
    "counter_increase",
    "erp_ideal_rate",
    "line_tags",
    "load_oee_config",
    "running_work_order",
    "tag_series",
]

log = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]
Series = Sequence[tuple[float, float]]  # (epoch seconds, value), sorted by time
Interval = tuple[float, float]


class PlannedBreak(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: clock_time
    minutes: float = Field(gt=0)


class Shift(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    start: clock_time
    hours: float = Field(gt=0, le=24)
    breaks: list[PlannedBreak] = []

    @model_validator(mode="after")
    def _breaks_inside(self) -> Shift:
        for brk in self.breaks:
            offset = _minutes_after(self.start, brk.start)
            if offset + brk.minutes > self.hours * 60:
                raise ValueError(f"break at {brk.start} ({brk.minutes} min) ends after shift {self.name!r}")
        return self


class ShiftCalendar(BaseModel):
    """Shifts repeat every day at the same local times."""

    model_config = ConfigDict(extra="forbid")

    timezone: str = "UTC"
    shifts: list[Shift] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_zone(self) -> ShiftCalendar:
        ZoneInfo(self.timezone)  # raises for an unknown zone
        return self


class LineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    site: str | None = None  # default: every site that has the state tag
    state_tag: str
    running: list[int] = [1]
    state_names: dict[int, str] = {0: "stopped", 2: "fault"}
    count_tag: str  # a counter of everything made
    good_tag: str | None = None  # a counter of good units; or:
    reject_tag: str | None = None  # a counter of rejects (good = count - rejects); neither: all good
    ideal_rate: float = Field(gt=0)  # units per hour, when the ERP does not say
    product: str | None = Field(None, description="ERP product SKU whose ideal_rate applies without a work order")
    counter_modulus: int | None = Field(
        None, ge=2, description="The counters wrap to 0 at this value (65536 for a 16-bit register); none: they do not"
    )
    wrap_band: float = Field(
        0.1, gt=0, le=0.5,
        description="With a modulus, a drop from the top band of the range into the bottom band is a wrap-around",
    )  # fmt: skip

    @model_validator(mode="after")
    def _one_quality_source(self) -> LineConfig:
        if self.good_tag and self.reject_tag:
            raise ValueError("give good_tag or reject_tag, not both")
        return self


def _default_calendar() -> ShiftCalendar:
    def shift(name: str, hour: int) -> Shift:
        return Shift(
            name=name,
            start=clock_time(hour),
            hours=8,
            breaks=[PlannedBreak(start=clock_time((hour + 4) % 24), minutes=30)],
        )

    return ShiftCalendar(shifts=[shift("A", 6), shift("B", 14), shift("C", 22)])


def _default_lines() -> list[LineConfig]:
    # The simulated mill: 240 t/h at mill 1's nominal 185 A, mill 2 the same per ampere at 160 A
    # (docs/simulator.md).
    return [
        LineConfig(name="mill1", state_tag="mill1.state", count_tag="mill1.cane_crushed", ideal_rate=240.0),
        LineConfig(name="mill2", state_tag="mill2.state", count_tag="mill2.cane_crushed", ideal_rate=207.6),
    ]


class CountsConfig(BaseModel):
    """How the production-counts job (``analytics.counts``) turns the lines' counters into production."""

    model_config = ConfigDict(extra="forbid")

    interval_s: int = Field(300, ge=1, le=86400, description="Fixed intervals, aligned to the epoch")
    settle_s: float = Field(120.0, ge=0, description="An interval is posted once its end is this old (late data)")
    lookback_s: float = Field(3600.0, gt=0, description="Where a line's first run (no record yet) starts")
    max_intervals: int = Field(288, ge=1, description="Intervals per line and site in one run; the rest next run")
    timeout_s: float = Field(10.0, gt=0, description="Per ERP request")


class ForecastJobConfig(BaseModel):
    """How the production-forecast job (``analytics.forecast_job``) forecasts the lines and keeps the forecasts."""

    model_config = ConfigDict(extra="forbid")

    horizon_h: int = Field(24, ge=1, le=168, description="Hours forecast from the start of the current hour")
    history_days: int = Field(35, ge=15, le=90, description="Days of counter history a forecast is made from")
    keep_days: float = Field(14.0, gt=0, description="Stored forecasts made longer ago than this are deleted")


class OeeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[LineConfig] = Field(default_factory=_default_lines)
    calendar: ShiftCalendar = Field(default_factory=_default_calendar)
    microstop_s: float = Field(120.0, ge=0)  # stops shorter than this are 'microstop'
    previous_shifts: int = Field(1, ge=0)  # finished shifts recomputed each run (late data)
    counts: CountsConfig = Field(default_factory=CountsConfig)  # the lines' production counts
    forecast: ForecastJobConfig = Field(default_factory=ForecastJobConfig)  # the lines' stored forecasts


def load_oee_config(path: Path | None) -> OeeConfig:
    """The OEE job's configuration: its YAML file (``FACTORY_OEE_CONFIG``), else the defaults."""
    return load_yaml_model(path, OeeConfig) if path else OeeConfig()


def _minutes_after(start: clock_time, at: clock_time) -> float:
    minutes = (at.hour * 60 + at.minute + at.second / 60) - (start.hour * 60 + start.minute + start.second / 60)
    return minutes % (24 * 60)


@dataclass(frozen=True, slots=True)
class ShiftWindow:
    name: str
    start: float  # epoch seconds
    end: float
    breaks: tuple[Interval, ...]


def shifts_between(calendar: ShiftCalendar, t0: float, t1: float) -> list[ShiftWindow]:
    """Every shift that overlaps [t0, t1), in start order."""
    zone = ZoneInfo(calendar.timezone)
    first = datetime.fromtimestamp(t0, zone).date() - timedelta(days=1)
    last = datetime.fromtimestamp(t1, zone).date()
    out: list[ShiftWindow] = []
    day: date = first
    while day <= last:
        for shift in calendar.shifts:
            start = datetime.combine(day, shift.start, zone).timestamp()
            end = start + shift.hours * 3600
            if start < t1 and end > t0:
                offsets = [(_minutes_after(shift.start, b.start) * 60, b.minutes * 60) for b in shift.breaks]
                breaks = tuple((start + offset, start + offset + length) for offset, length in offsets)
                out.append(ShiftWindow(shift.name, start, end, breaks))
        day += timedelta(days=1)
    return sorted(out, key=lambda w: w.start)


def _overlap(a: Interval, b: Interval) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def _planned(window: Interval, breaks: Sequence[Interval]) -> list[Interval]:
    """The window minus the breaks."""
    pieces = [window]
    for b0, b1 in breaks:
        pieces = [p for a0, a1 in pieces for p in ((a0, min(a1, b0)), (max(a0, b1), a1)) if p[1] > p[0]]
    return pieces


@dataclass(frozen=True, slots=True)
class Stop:
    start: float
    end: float
    reason: str


def state_segments(states: Series, start: float, end: float) -> list[tuple[float, float, float | None]]:
    """The state as a step function over [start, end): (from, to, value), None before the first sample.

    A segment keeps its true beginning (the sample that opened it, even before ``start``),
    so a stop's full length is known when classifying it.
    """
    segments: list[tuple[float, float, float | None]] = []
    since, current = start, None
    for at, value in states:
        if at >= end:
            break
        if at <= start:
            since, current = at, value  # the value held when the window opens
        elif value != current:
            segments.append((since, at, current))
            since, current = at, value
    segments.append((since, end, current))
    return segments


def find_stops(
    line: LineConfig, states: Series, start: float, end: float, microstop_s: float
) -> tuple[list[Stop], list[Interval]]:
    """The stops (any non-running state, or no data) and the running intervals in [start, end)."""
    stops: list[Stop] = []
    running: list[Interval] = []
    for s0, s1, value in state_segments(states, start, end):
        if value is not None and int(value) in line.running:
            running.append((max(s0, start), s1))
            continue
        if value is None:
            reason = "no_data"
        elif s1 - s0 < microstop_s:
            reason = "microstop"
        else:
            reason = line.state_names.get(int(value), f"state {int(value)}")
        stops.append(Stop(max(s0, start), s1, reason))
    return stops, running  # fmt: skip


def counter_increase(
    samples: Series, start: float, end: float, modulus: int | None = None, wrap_band: float = 0.1
) -> float:
    """What a counter added in (start, end]. A drop is a reset to zero, then counting up again;
    with a ``modulus``, a drop from the top ``wrap_band`` of the range into its bottom band is
    the counter passing ``modulus - 1`` and starting again at 0 (a wrap-around)."""
    total, previous = 0.0, None
    for at, value in samples:
        if at > end:
            break
        if at > start and previous is not None:
            if value >= previous:
                total += value - previous
            elif modulus and previous >= modulus * (1 - wrap_band) and value < modulus * wrap_band:
                total += value + modulus - previous
            else:
                total += value
        previous = value
    return total


@dataclass(frozen=True, slots=True)
class BucketResult:
    start: float
    end: float
    planned_s: float
    run_s: float
    total: float
    good: float
    availability: float
    performance: float | None
    quality: float | None
    oee: float
    ideal_rate: float  # units per hour the performance was measured against
    losses: dict[str, tuple[int, float]] = field(default_factory=dict)  # reason -> (stops, seconds)


@dataclass(frozen=True, slots=True)
class LineData:
    states: Series
    counts: Series
    quality: Series  # good or reject counter, empty without one


@dataclass(frozen=True, slots=True)
class Timeline:
    """A shift's state history, up to ``until`` (now, for the shift in progress)."""

    until: float
    breaks: Sequence[Interval]
    stops: Sequence[Stop]
    running: Sequence[Interval]


def compute_bucket(
    line: LineConfig, data: LineData, timeline: Timeline, bucket: Interval, ideal_rate: float | None = None
) -> BucketResult | None:
    """OEE of one bucket, counted up to ``timeline.until``; None when it holds no planned time yet.

    ``ideal_rate`` (units per hour) is the ERP's, when it has one; else the line's configured rate.
    """
    rate = ideal_rate or line.ideal_rate
    until, stops, running = timeline.until, timeline.stops, timeline.running
    planned = _planned((bucket[0], min(bucket[1], until)), timeline.breaks)
    planned_s = sum(b - a for a, b in planned)
    if planned_s <= 0:
        return None
    run_s = sum(_overlap(r, p) for r in running for p in planned)
    losses: dict[str, tuple[int, float]] = {}
    for stop in stops:
        lost = sum(_overlap((stop.start, stop.end), p) for p in planned)
        if lost > 0:
            count, seconds = losses.get(stop.reason, (0, 0.0))
            losses[stop.reason] = (count + 1, seconds + lost)
    total = counter_increase(data.counts, bucket[0], min(bucket[1], until), line.counter_modulus, line.wrap_band)
    extra = counter_increase(data.quality, bucket[0], min(bucket[1], until), line.counter_modulus, line.wrap_band)
    good = extra if line.good_tag else total - extra if line.reject_tag else total
    availability = run_s / planned_s
    performance = total * 3600 / rate / run_s if run_s > 0 else None
    quality = good / total if total > 0 else None
    oee = availability * performance * quality if performance is not None and quality is not None else 0.0
    return BucketResult(
        bucket[0], bucket[1], planned_s, run_s, total, good, availability, performance, quality, oee, rate, losses
    )


def shift_buckets(shift: ShiftWindow, until: float) -> list[tuple[Literal["shift", "hour"], Interval]]:
    """The whole shift, then its hours (the last one shorter if the shift is), up to ``until``."""
    out: list[tuple[Literal["shift", "hour"], Interval]] = [("shift", (shift.start, shift.end))]
    at = shift.start
    while at < min(shift.end, until):
        out.append(("hour", (at, min(at + 3600, shift.end))))
        at += 3600
    return out


def shift_rate(
    line: LineConfig, data: LineData, hours: Sequence[Interval], rates: dict[Interval, float], until: float
) -> float | None:
    """The shift's ideal rate when it changed between hours (another work order): the count over
    the ideal time of the count, sum(count_h / rate_h), so the shift's performance is the hours'
    together. None when nothing was made."""
    counts = [counter_increase(data.counts, h[0], min(h[1], until), line.counter_modulus, line.wrap_band)
              for h in hours]  # fmt: skip
    ideal_h = sum(count / rates[h] for h, count in zip(hours, counts, strict=True))
    return sum(counts) / ideal_h if ideal_h > 0 else None


@dataclass(slots=True)
class OeeSummary:
    lines: int = 0
    rows: int = 0
    losses: int = 0


_TAGS = """SELECT d.site, t.name, t.id FROM telemetry.tag t JOIN telemetry.device d ON d.id = t.device_id
           WHERE t.name = ANY(%(names)s) AND (%(site)s::text IS NULL OR d.site = %(site)s)"""
_SERIES = """(SELECT extract(epoch FROM time)::float8, value FROM telemetry.sample
              WHERE tag_id = ANY(%(ids)s) AND time <= %(start)s AND value IS NOT NULL AND quality < 2
              ORDER BY time DESC LIMIT 1)
             UNION ALL
             (SELECT extract(epoch FROM time)::float8, value FROM telemetry.sample
              WHERE tag_id = ANY(%(ids)s) AND time > %(start)s AND time <= %(end)s
                AND value IS NOT NULL AND quality < 2)
             ORDER BY 1"""
_UPSERT = """INSERT INTO analytics.oee (bucket, bucket_end, period, site, line, shift, shift_start, availability,
                 performance, quality, oee, planned_s, run_s, total_count, good_count, ideal_rate, work_order_id)
             VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
             ON CONFLICT (site, line, period, bucket) DO UPDATE SET bucket_end = EXCLUDED.bucket_end,
                 shift = EXCLUDED.shift, shift_start = EXCLUDED.shift_start, availability = EXCLUDED.availability,
                 performance = EXCLUDED.performance, quality = EXCLUDED.quality, oee = EXCLUDED.oee,
                 planned_s = EXCLUDED.planned_s, run_s = EXCLUDED.run_s, total_count = EXCLUDED.total_count,
                 good_count = EXCLUDED.good_count, ideal_rate = EXCLUDED.ideal_rate,
                 work_order_id = EXCLUDED.work_order_id, computed_at = now()"""
# The ERP's ideal rate for a line in a bucket: the production order that ran on it last
# (started before the bucket ends, not finished before it begins), its own rate or its
# product's; else the configured product's. The ERP owns these tables; this only reads them.
_ERP_RATE = """SELECT rate FROM (
        (SELECT coalesce(w.ideal_rate, p.ideal_rate) AS rate, 0 AS pick, w.started_at
           FROM erp.work_order w JOIN erp.product p ON p.id = w.product_id
          WHERE w.kind = 'production' AND w.asset = %(line)s AND (w.site = %(site)s OR w.site IS NULL)
            AND w.started_at < %(end)s AND (w.finished_at IS NULL OR w.finished_at > %(start)s)
            AND coalesce(w.ideal_rate, p.ideal_rate) IS NOT NULL
          ORDER BY w.started_at DESC, w.id DESC LIMIT 1)
        UNION ALL
        SELECT ideal_rate, 1, NULL FROM erp.product WHERE sku = %(sku)s AND ideal_rate IS NOT NULL
    ) AS r ORDER BY pick LIMIT 1"""
# The production order that ran on a line last in an interval (started before it ends, not
# finished before it begins), whatever its status now; the same notion as _ERP_RATE's. An
# order is for the line at its site; one without a site (made before orders had one) for a
# line of that name at any site.
_ERP_ORDER = """SELECT w.id, w.status FROM erp.work_order w
    WHERE w.kind = 'production' AND w.asset = %(line)s AND (w.site = %(site)s OR w.site IS NULL)
      AND w.started_at < %(end)s AND (w.finished_at IS NULL OR w.finished_at > %(start)s)
    ORDER BY w.started_at DESC, w.id DESC LIMIT 1"""
_CLEAR_LOSSES = "DELETE FROM analytics.oee_loss WHERE site = %s AND line = %s AND period = %s AND bucket = %s"
_LOSS = """INSERT INTO analytics.oee_loss (bucket, period, site, line, reason, stops, seconds)
           VALUES (%s, %s, %s, %s, %s, %s, %s)"""


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


async def erp_ideal_rate(conn: Conn, line: LineConfig, site: str, bucket: Interval) -> float | None:
    """The ERP's ideal rate for ``line`` at ``site`` in ``bucket`` (see ``_ERP_RATE``), None when it has none."""
    params = {"line": line.name, "site": site, "sku": line.product, "start": _ts(bucket[0]), "end": _ts(bucket[1])}
    cur = await conn.execute(_ERP_RATE, params)
    row = await cur.fetchone()
    return float(row[0]) if row else None


@dataclass(frozen=True, slots=True)
class RunningOrder:
    """A production work order of the ERP that ran on a line, and its status now."""

    id: int
    status: str


async def running_work_order(conn: Conn, line: str, site: str, interval: Interval) -> RunningOrder | None:
    """The production order that ran on ``line`` at ``site`` last in ``interval`` (see ``_ERP_ORDER``), or None."""
    params = {"line": line, "site": site, "start": _ts(interval[0]), "end": _ts(interval[1])}
    cur = await conn.execute(_ERP_ORDER, params)
    row = await cur.fetchone()
    return RunningOrder(int(row[0]), str(row[1])) if row else None


async def line_tags(conn: Conn, line: LineConfig, names: list[str]) -> dict[str, dict[str, list[int]]]:
    """Site -> tag name -> ids of the line's tags ``names`` (at its configured site, else at every site)."""
    cur = await conn.execute(_TAGS, {"names": names, "site": line.site})
    by_site: dict[str, dict[str, list[int]]] = {}
    for site, name, tag_id in await cur.fetchall():
        by_site.setdefault(str(site), {}).setdefault(str(name), []).append(int(tag_id))
    return by_site


async def tag_series(conn: Conn, ids: list[int], start: float, end: float) -> list[tuple[float, float]]:
    """The good samples of the tags ``ids`` in (start, end], after the last one at or before ``start``."""
    if not ids:
        return []
    cur = await conn.execute(_SERIES, {"ids": ids, "start": _ts(start), "end": _ts(end)})
    return [(float(t), float(v)) for t, v in await cur.fetchall()]


class OeeJob:
    """One pass per ``run``: the shift in progress and ``previous_shifts`` before it, per line and site."""

    def __init__(self, config: OeeConfig | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config or OeeConfig()
        self.clock = clock

    async def run(self, conn: Conn) -> OeeSummary:
        now, summary = self.clock(), OeeSummary()
        shifts = [s for s in shifts_between(self.config.calendar, now - 48 * 3600, now) if s.start <= now]
        shifts = shifts[-(self.config.previous_shifts + 1) :]
        for line in self.config.lines:
            names = [n for n in (line.state_tag, line.count_tag, line.good_tag or line.reject_tag) if n]
            by_site = await line_tags(conn, line, names)
            for site, ids in sorted(by_site.items()):
                if any(name not in ids for name in names):
                    log.warning("oee: line %s at site %s lacks a tag of %s", line.name, site, names)
                    continue
                summary.lines += 1
                for shift in shifts:
                    await self._shift(conn, line, shift, site=site, ids=ids, now=now, summary=summary)
        return summary

    async def _shift(
        self, conn: Conn, line: LineConfig, shift: ShiftWindow, *, site: str, ids: dict[str, list[int]], now: float,
        summary: OeeSummary,
    ) -> None:  # fmt: skip
        until = min(shift.end, now)
        extra = line.good_tag or line.reject_tag
        data = LineData(
            await tag_series(conn, ids[line.state_tag], shift.start, until),
            await tag_series(conn, ids.get(line.count_tag, []), shift.start, until),
            await tag_series(conn, ids.get(extra, []), shift.start, until) if extra else [],
        )
        stops, running = find_stops(line, data.states, shift.start, until, self.config.microstop_s)
        timeline = Timeline(until, shift.breaks, stops, running)
        buckets = shift_buckets(shift, until)
        rates = {
            b: await erp_ideal_rate(conn, line, site, (b[0], min(b[1], until))) or line.ideal_rate for _, b in buckets
        }
        whole = buckets[0][1]
        rates[whole] = shift_rate(line, data, [b for p, b in buckets if p == "hour"], rates, until) or rates[whole]
        orders = {b: await running_work_order(conn, line.name, site, (b[0], min(b[1], until))) for _, b in buckets}
        async with conn.transaction():
            for period, bucket in buckets:
                result = compute_bucket(line, data, timeline, bucket, rates[bucket])
                if result is None:
                    continue
                await conn.execute(_UPSERT, (
                    _ts(bucket[0]), _ts(bucket[1]), period, site, line.name, shift.name, _ts(shift.start),
                    result.availability, result.performance, result.quality, result.oee, result.planned_s,
                    result.run_s, result.total, result.good, result.ideal_rate,
                    order.id if (order := orders[bucket]) else None))  # fmt: skip
                await conn.execute(_CLEAR_LOSSES, (site, line.name, period, _ts(bucket[0])))
                for reason, (count, seconds) in sorted(result.losses.items()):
                    await conn.execute(_LOSS, (_ts(bucket[0]), period, site, line.name, reason, count, seconds))
                summary.rows += 1
                summary.losses += len(result.losses)
        log.debug("oee %s/%s shift %s: %d stops", site, line.name, shift.name, len(stops))
