"""The cheap per-tag checks on small series: spikes, steps, ranges, stuck sensors."""

from __future__ import annotations

import numpy as np

from analytics.checks import CheckConfig, StuckState, TagLimits, run_checks

CONFIG = CheckConfig(stuck_after_s=60, spike_sigmas=8, range_margin=1.0)


def healthy(seed: int = 1, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.arange(float(n)), 10 + rng.normal(0, 0.1, n)


def learned(config: CheckConfig = CONFIG, name: str = "t") -> TagLimits:
    limits = TagLimits.learn(name, *healthy(), config)
    assert limits is not None
    return limits


def check(values: np.ndarray, limits: TagLimits | None = None, **kw: float) -> list[tuple[str, float]]:
    times = 1000 + np.arange(float(values.size))
    flags = run_checks(times, values, limits or learned(), CONFIG, StuckState(), now=float(times[-1]), **kw)
    return [(f.check, f.time - 1000) for f in flags]


def test_learning_the_healthy_window() -> None:
    limits = learned()
    span = float(np.ptp(healthy()[1]))
    assert limits.low == np.min(healthy()[1]) - span
    assert limits.high == np.max(healthy()[1]) + span
    assert 0.05 < limits.noise < 0.2  # the series' own sigma is 0.1
    assert limits.stuck_after_s == 60  # changes every second: the configured floor applies
    assert TagLimits.learn("t", np.arange(50.0), np.full(50, 3.0), CONFIG) is None  # constant: nothing to learn
    configured = TagLimits.learn("t", *healthy(), CheckConfig(limits={"t": (0.0, 20.0)}))
    assert configured is not None
    assert (configured.low, configured.high) == (0.0, 20.0)


def test_a_one_sample_spike_is_a_spike_and_a_step_is_not() -> None:
    _, values = healthy(seed=2, n=40)
    spiked = values.copy()
    spiked[20] += 1.5  # fifteen noise sigmas
    wide = learned(CheckConfig(range_margin=5))  # limits far enough out that only the spike check fires
    assert check(spiked, wide) == [("spike", 20.0)]
    stepped = values.copy()
    stepped[20:] += 1.5
    assert check(stepped, wide) == []
    assert check(spiked) == [("range", 20.0), ("spike", 20.0)]  # with the default margin, both


def test_values_beyond_the_limits_are_flagged_one_by_one() -> None:
    _, values = healthy(seed=3, n=30)
    values[10:13] = 100.0
    assert check(values) == [("range", 10.0), ("range", 11.0), ("range", 12.0)]


def test_a_stuck_sensor_is_flagged_once_it_has_not_moved_for_long_enough() -> None:
    limits = learned()
    state = StuckState()
    _, values = healthy(seed=4, n=20)
    times = np.arange(20.0)
    assert run_checks(times, values, limits, CONFIG, state, now=19.0) == []
    frozen = np.full(30, values[-1])
    assert run_checks(np.arange(20.0, 50.0), frozen, limits, CONFIG, state, now=49.0, new_after=19.0) == []
    flags = run_checks(np.arange(50.0, 90.0), np.full(40, values[-1]), limits, CONFIG, state, now=89.0,
                       new_after=49.0)  # fmt: skip
    assert [(f.check, f.time) for f in flags] == [("stuck", 89.0)]
    assert state.last_change == 19.0
    assert flags[0].score == (89.0 - 19.0) / 60
    moving = run_checks(np.array([90.0]), np.array([values[-1] + 0.1]), limits, CONFIG, state, now=90.0,
                        new_after=89.0)  # fmt: skip
    assert moving == []
    assert state.last_change == 90.0


def test_a_tag_that_changes_rarely_when_healthy_is_not_stuck_after_a_quiet_minute() -> None:
    times = np.arange(0.0, 600.0)
    values = np.repeat(np.arange(20.0), 30)  # changes every 30 s when healthy
    limits = TagLimits.learn("slow", times, values, CONFIG)
    assert limits is not None
    assert limits.stuck_after_s == 300.0
    state = StuckState(last_change=600.0, last_value=19.0)
    later = np.arange(601.0, 800.0)
    assert run_checks(later, np.full(later.size, 19.0), limits, CONFIG, state, now=799.0) == []


def test_missing_values_are_ignored() -> None:
    _, values = healthy(seed=5, n=30)
    values[5:8] = np.nan
    assert check(values) == []
