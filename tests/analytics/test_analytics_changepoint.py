"""The changepoint detector: when a change began, on hand-built series whose changes are known."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.changepoint import ChangeState, filled, find, split, statistic
from analytics.detector import Detector, DetectorConfig, StreamState

ONE = np.ones((1, 1))


def test_the_statistic_and_the_change_time_by_hand() -> None:
    """One tag, window 2, a step from 0 to 4 at row 4: rows 0 0 0 0 4 4 4 4.

    D_t = (mean of rows t-1, t  -  mean of rows t-3, t-2)^2:
      t=3: (0 - 0)^2 = 0;  t=4: (2 - 0)^2 = 4;  t=5: (4 - 0)^2 = 16;  t=6: (4 - 2)^2 = 4;  t=7: 0.
    With the line at 1, D peaks at t=5 above it; the fall at row 6 reports the change there.
    Its start: the split k of rows 1-6 (the last 3 windows) with the largest
    n_after * 2 / (n_after + 2) * (mean of rows k..6 - mean of rows k-2, k-1)^2:
      k=3: 4*2/6 * (3 - 0)^2 = 12;  k=4: 3*2/5 * (4 - 0)^2 = 19.2;  k=5: 2*2/4 * (4 - 2)^2 = 4;
      k=6: 1*2/3 * (4 - 4)^2 = 0.  So row 4: the step.
    """
    rows = np.array([0, 0, 0, 0, 4, 4, 4, 4], dtype=np.float64)[:, np.newaxis]
    d = statistic(rows, ONE, 2)
    np.testing.assert_allclose(d[3:], [0, 4, 16, 4, 0])
    assert np.isnan(d[:3]).all()
    changes = find(rows, ONE, 2, 1.0, ChangeState(np.zeros((0, 1))))
    assert (changes.found, changes.started) == ([6], [4])
    assert find(rows, ONE, 2, 20.0, ChangeState(np.zeros((0, 1)))).found == []  # D never above a line of 20
    assert split(rows[:6], ONE, 2) == 4  # at row 5, before the peak is known, the likeliest split is the step


def test_reports_are_a_window_apart_and_a_gap_holds_the_last_value() -> None:
    rows = np.zeros((40, 1))
    rows[10:, 0] = 4.0  # a step at 10 ...
    rows[13:, 0] = 8.0  # ... and another 3 rows later: closer than the window, one report
    rows[30:, 0] = 0.0  # a step back 17 rows later: a second report
    changes = find(rows, ONE, 4, 1.0, ChangeState(np.zeros((0, 1))))
    assert len(changes.started) == 2
    assert 10 <= changes.started[0] <= 13
    assert changes.started[1] == 30
    holes = np.array([[1.0], [np.nan], [3.0], [np.nan], [np.nan]])
    np.testing.assert_array_equal(filled(holes, np.zeros(1))[:, 0], [1, 1, 3, 3, 3])


def noisy(rows: int, step_at: int, seed: int) -> np.ndarray:
    """Three tags of unit noise; the second steps up by 3 sigmas at ``step_at``."""
    data = np.random.default_rng(seed).normal(0, 1, (rows, 3)) + np.array([10.0, 50.0, 5.0])
    data[step_at:, 1] += 3.0
    return data


def test_a_step_is_found_a_window_later_and_dated_near_its_start() -> None:
    config = DetectorConfig(change_window=15, change_factor=1.0)
    data = noisy(900, 650, seed=1)
    scores = Detector(config, ("a", "b", "c")).fit(data[:400]).stream().update(data[400:])
    near = [s for s in scores.changes if abs(s - 250) <= 5]
    assert near, scores.changes
    found = scores.changes_found[scores.changes.index(near[0])]
    assert 250 + 10 <= found <= 250 + 25  # found about a window after the step
    assert len(scores.changes) <= 3  # a few false changes in 500 rows of noise at most
    assert scores.opened
    assert abs(scores.opened_from[0] - 250) <= 5  # the episode's estimated start, known at its opening
    assert scores.opened[0] > scores.opened_from[0]


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=5))
def test_scoring_in_pieces_finds_the_same_changes(cuts: list[int]) -> None:
    config = DetectorConfig(change_window=10, change_factor=1.0)
    data = noisy(900, 650, seed=2)
    data[780:, 0] -= 3.0
    detector = Detector(config, ("a", "b", "c")).fit(data[:400])
    whole = detector.stream().update(data[400:])
    stream = detector.stream()
    bounds = [0, *sorted(cuts), 500]
    found, started, opened_from = [], [], []
    for a, b in itertools.pairwise(bounds):
        state = StreamState.from_dict(stream.state.to_dict())  # through JSON, as the live job keeps it
        stream.state = state
        part = stream.update(data[400 + a : 400 + b])
        found += [a + i for i in part.changes_found]
        started += [a + i for i in part.changes]
        opened_from += [a + i for i in part.opened_from]
    assert (found, started) == (whole.changes_found, whole.changes)
    assert opened_from == whole.opened_from
    assert len(whole.changes) >= 2


def test_a_model_from_before_the_changepoint_detector_still_scores() -> None:
    data = noisy(600, 500, seed=3)
    model = Detector(DetectorConfig(), ("a", "b", "c")).fit(data[:400]).model
    assert model is not None
    text = model.to_json().replace('"change_line"', '"unused_a"').replace('"recent"', '"unused_b"')
    old = Detector(DetectorConfig(), ("a", "b", "c"), type(model).from_json(text))
    scores = old.stream().update(data[400:])
    assert scores.changes == []  # no line learned: no changes reported, the episodes as before
    assert scores.opened
    assert old.model is not None
    assert old.model.change_line == float("inf")
