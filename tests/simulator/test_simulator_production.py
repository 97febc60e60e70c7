"""Hourly production histories: the live simulator's rate and short stops, plus the calendar."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from simulator.plant import CANE_T_PER_AH, MILL_AMPS, MILL_MEAN_RUN_S, MILL_STOP_S
from simulator.production import PlantCalendar, hourly_production


def test_the_same_seed_gives_the_same_history_and_another_seed_another() -> None:
    one, again, other = (hourly_production("mill2", weeks=1, seed=s) for s in (3, 3, 4))
    assert one == again
    assert one.produced != other.produced


def test_without_calendar_effects_the_rate_is_the_simulators_less_its_short_stops() -> None:
    flat = PlantCalendar(break_hours=(), cleaning_weekday=-1, feed_sigma=0.0, night_feed=1.0, weekend_feed=1.0,
                         breakdown_every_h=1e9)  # fmt: skip
    sim = hourly_production("mill1", weeks=4, seed=1, calendar=flat)
    mean_stop = sum(MILL_STOP_S) / 2
    run_share = MILL_MEAN_RUN_S / (MILL_MEAN_RUN_S + mean_stop)  # a stop ends each run
    expected = CANE_T_PER_AH * MILL_AMPS["mill1"] * run_share
    assert sum(sim.produced) / len(sim.produced) == pytest.approx(expected, rel=0.01)
    assert set(sim.state) <= {0, 1, 2}


def test_cleaning_and_planned_breaks_stop_the_mill() -> None:
    sim = hourly_production("mill1", weeks=2, seed=2)
    for h, made in enumerate(sim.produced):
        at = datetime.fromtimestamp(sim.start + h * 3600, UTC)
        if at.weekday() == 6 and 6 <= at.hour < 14:
            assert made == 0
        elif at.hour in (2, 10, 18):
            assert made <= 0.55 * 240  # half an hour of a 240 t/h mill at most
    assert any(state == 2 for state in sim.state)  # breakdowns happen in two weeks
    assert max(sim.down_s) > 3600
