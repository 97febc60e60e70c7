"""Weeks of hourly production of the mill's lines, from the live simulator's own stop process.

Running the live plant model (``simulator.plant``) for weeks of simulated time at its tick
would take minutes per week; a production forecast only needs what the cane counter adds
per hour. So this generator draws the same processes directly, in continuous time:

- **from the simulator, unchanged**: the rate (``CANE_T_PER_AH`` x the mill's nominal
  current, 240 t/h for mill 1, 207.6 t/h for mill 2; the current's 45 s feed wave and its
  noise average out over an hour), the short stops (one about every ``MILL_MEAN_RUN_S`` of
  running, lasting ``MILL_STOP_S``, ``MILL_FAULT_SHARE`` of them faults), the counter that
  only counts whole tonnes.
- **added here, because the live simulator runs for minutes, not weeks** (``PlantCalendar``):
  the mill stands still through the planned breaks of the OEE job's default shift calendar
  (30 min at 02:00, 10:00 and 18:00 UTC) and through a weekly cleaning stop (Sunday
  06:00-14:00); cane supply drifts from hour to hour (an AR(1) factor), is lower at night
  (shift C, 22:00-06:00) and at the weekend; and now and then the mill breaks down for hours
  (state fault; Poisson onsets, log-normal repair times).

Pure Python and seeded (``random.Random`` per ``seed:line``): the same arguments give the
same series, bit for bit.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from simulator.plant import CANE_T_PER_AH, MILL_AMPS, MILL_FAULT_SHARE, MILL_MEAN_RUN_S, MILL_STOP_S

__all__ = ["DEFAULT_START", "HourlyProduction", "PlantCalendar", "hourly_production"]

HOUR: Final = 3600.0
WEEK_H: Final = 168
DEFAULT_START: Final = datetime(2031, 1, 6, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC

STOPPED, RUNNING, FAULT = 0, 1, 2  # the values of the mill's state tag


@dataclass(frozen=True, slots=True)
class PlantCalendar:
    """What a mill's weeks hold beyond the live simulator's minutes (all times UTC)."""

    break_hours: tuple[int, ...] = (2, 10, 18)  # a planned break starts on the hour ...
    break_minutes: float = 30.0  # ... and lasts this long (the OEE job's default calendar)
    cleaning_weekday: int = 6  # Sunday
    cleaning_hours: tuple[int, int] = (6, 14)
    feed_sigma: float = 0.03  # hour-to-hour cane supply drift (share of the rate) ...
    feed_corr: float = 0.9  # ... and its correlation from one hour to the next
    night_feed: float = 0.96  # shift C (22:00-06:00): fewer cane deliveries
    weekend_feed: float = 0.93  # Saturday and Sunday
    breakdown_every_h: float = 60.0  # mean running hours between breakdowns
    breakdown_median_h: float = 2.0  # repair time, log-normal
    breakdown_sigma: float = 0.9


@dataclass(frozen=True, slots=True)
class HourlyProduction:
    """``produced[i]``: tonnes the counter added in hour ``i`` (from ``start + i h``); ``state[i]``
    the mill's state at that hour's end and ``down_s[i]`` how long it had not been running then."""

    line: str
    start: float
    produced: tuple[float, ...]
    state: tuple[int, ...]
    down_s: tuple[float, ...]


Span = tuple[float, float]  # seconds after start


def _planned(calendar: PlantCalendar, start: float, hours: int) -> list[Span]:
    spans: list[Span] = []
    for h in range(hours):
        at = datetime.fromtimestamp(start + h * HOUR, UTC)
        if at.weekday() == calendar.cleaning_weekday and at.hour == calendar.cleaning_hours[0]:
            length = calendar.cleaning_hours[1] - calendar.cleaning_hours[0]
            spans.append((h * HOUR, (h + length) * HOUR))
        elif at.hour in calendar.break_hours:
            spans.append((h * HOUR, h * HOUR + calendar.break_minutes * 60))
    merged: list[Span] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _inside(spans: list[Span], at: float) -> int | None:
    """Index of the span holding ``at`` (sorted, disjoint spans), or None."""
    i = bisect.bisect_right(spans, (at, math.inf)) - 1
    return i if i >= 0 and spans[i][0] <= at < spans[i][1] else None


def _stops(
    rng: random.Random, end: float, mean_run_s: float, length: tuple[float, float], blocked: list[Span]
) -> list[Span]:
    """Onsets at ``1 / mean_run_s`` per second of running (not inside ``blocked``), one at a time."""
    spans: list[Span] = []
    at = 0.0
    while True:
        at += rng.expovariate(1.0 / mean_run_s)
        if at >= end:
            return spans
        if (i := _inside(blocked, at)) is not None:
            at = blocked[i][1]  # not running: no stop can start
            continue
        stop = (at, at + rng.uniform(*length))
        spans.append(stop)
        at = stop[1]


def _union(*lists: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for a, b in sorted(s for spans in lists for s in spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _breakdowns(rng: random.Random, end: float, calendar: PlantCalendar, planned: list[Span]) -> list[Span]:
    spans: list[Span] = []
    at = 0.0
    while True:
        at += rng.expovariate(1.0 / (calendar.breakdown_every_h * HOUR))
        if at >= end:
            return spans
        if (i := _inside(planned, at)) is not None:
            at = planned[i][1]
            continue
        repair = calendar.breakdown_median_h * HOUR * math.exp(calendar.breakdown_sigma * rng.gauss(0.0, 1.0))
        spans.append((at, at + repair))
        at += repair


def _feed(rng: random.Random, calendar: PlantCalendar, start: float, hours: int) -> list[float]:
    out, drift = [], 0.0
    spread = calendar.feed_sigma * math.sqrt(1.0 - calendar.feed_corr**2)
    for h in range(hours):
        drift = calendar.feed_corr * drift + rng.gauss(0.0, spread)
        at = datetime.fromtimestamp(start + h * HOUR, UTC)
        factor = 1.0 + drift
        factor *= calendar.night_feed if at.hour >= 22 or at.hour < 6 else 1.0
        factor *= calendar.weekend_feed if at.weekday() >= 5 else 1.0
        out.append(factor)
    return out


def hourly_production(
    line: str = "mill1", *, weeks: float, seed: int = 0, start: float = DEFAULT_START,
    calendar: PlantCalendar | None = None,
) -> HourlyProduction:  # fmt: skip
    """``weeks`` of hourly cane crushed by ``line`` (``mill1`` or ``mill2``) from ``start`` (on an hour)."""
    if line not in MILL_AMPS:
        raise ValueError(f"unknown line {line!r}; the mill has {sorted(MILL_AMPS)}")
    if weeks <= 0 or start % HOUR:
        raise ValueError("weeks must be positive and start on a whole hour")
    cal = calendar or PlantCalendar()
    hours = round(weeks * WEEK_H)
    end = hours * HOUR
    rng = random.Random(f"{seed}:{line}")
    planned = _planned(cal, start, hours)
    breakdowns = _breakdowns(rng, end, cal, planned)
    long_stops = _union(planned, breakdowns)
    short = _stops(rng, end, MILL_MEAN_RUN_S, MILL_STOP_S, long_stops)
    faults = {s for s in short if rng.random() < MILL_FAULT_SHARE}
    down = _union(long_stops, short)
    feed = _feed(rng, cal, start, hours)
    rate_s = CANE_T_PER_AH * MILL_AMPS[line] / HOUR
    produced: list[float] = []
    states: list[int] = []
    downs: list[float] = []
    total = prev = rng.uniform(1_000_000.0, 1_200_000.0)  # the counter's reading when the history starts
    j = 0
    for h in range(hours):
        h0, h1 = h * HOUR, (h + 1) * HOUR
        while j < len(down) and down[j][1] <= h0:
            j += 1
        stopped = sum(max(0.0, min(b, h1) - max(a, h0)) for a, b in down[j : j + 64] if a < h1)
        total += rate_s * feed[h] * (HOUR - stopped)
        produced.append(float(math.floor(total) - math.floor(prev)))
        prev = total
        block = _inside(down, h1 - 1e-6)
        downs.append(0.0 if block is None else h1 - down[block][0])
        if block is None:
            states.append(RUNNING)
        elif _inside(planned, h1 - 1e-6) is not None:
            states.append(STOPPED)
        elif _inside(breakdowns, h1 - 1e-6) is not None:
            states.append(FAULT)
        else:
            i = _inside(short, h1 - 1e-6)
            states.append(FAULT if i is not None and short[i] in faults else STOPPED)
    return HourlyProduction(line, start, tuple(produced), tuple(states), tuple(downs))
