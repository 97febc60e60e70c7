"""SKAB's metrics, checked against values computed by hand from SKAB's definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analytics.metrics import Confusion, changepoints_of, confusion, nab_tally


def test_point_metrics_are_pooled_counts_and_skab_formulas() -> None:
    total = confusion([0, 0, 1, 1, 1], [0, 1, 1, 1, 0]) + confusion([0, 0, 0, 1], [0, 0, 0, 0])
    assert total == Confusion(tp=2, tn=4, fp=1, fn=2)
    assert total.f1 == pytest.approx(2 / (2 + (2 + 1) / 2))  # TP / (TP + (FN + FP) / 2)
    assert total.far == pytest.approx(100 * 1 / (1 + 4))  # FP / (FP + TN), percent
    assert total.mar == pytest.approx(100 * 2 / (2 + 2))  # FN / (FN + TP), percent


def test_flagging_everything_is_not_a_good_detector() -> None:
    true = np.r_[np.zeros(46), np.ones(54)]  # SKAB's test parts are about 54 % anomalous
    everything = confusion(true, np.ones(100))
    assert round(everything.f1, 2) == 0.70
    assert everything.far == 100
    assert everything.mar == 0


def test_predicted_changepoints_are_the_flips_and_a_leading_alarm() -> None:
    assert changepoints_of([1, 1, 0, 0, 1, 0]).astype(int).tolist() == [1, 0, 1, 0, 1, 1]
    assert changepoints_of([0, 0, 1]).astype(int).tolist() == [0, 0, 1]
    assert changepoints_of([]).size == 0


def skab_scale(position: float, a_tp: float, a_fp: float) -> float:
    """SKAB's my_scale(): tanh from A_tp at a window's start to A_fp at its end, on 1000 steps."""
    event = min(int(position * 1000), 999)
    x = np.linspace(-np.pi / 2, np.pi / 2, 1000)[event]
    return (a_tp - a_fp) / 2 * -np.tanh(x) / np.tanh(np.pi / 2) + (a_tp - a_fp) / 2 + a_fp


def test_nab_scores_hits_misses_and_false_positives() -> None:
    times = np.arange(100.0)
    true_cp = np.zeros(100)
    true_cp[[10, 50]] = 1  # windows [10, 40] and [50, 80] (30 s to the right)
    predicted = np.zeros(100)
    predicted[[5, 20, 25, 90]] = 1  # 5 and 90 outside: false positives; 20 first in window 1; window 2 missed
    tally = nab_tally(times, true_cp, predicted, 30.0)
    assert (tally.true_changepoints, tally.missed, tally.false_positives) == (2, 1, 2)
    expected = 2 * -0.11 + skab_scale(10 / 30, 1.0, -0.11) - 1.0
    assert tally.score["standard"] == pytest.approx(expected)
    assert (tally.null["standard"], tally.perfect["standard"]) == (-2.0, 2.0)
    assert tally.normalised()["standard"] == pytest.approx(100 * (expected + 2) / 4)
    low_fn = 2 * -0.11 + skab_scale(10 / 30, 1.0, -0.11) - 2.0
    assert tally.score["low_fn"] == pytest.approx(low_fn)
    assert tally.normalised()["low_fn"] == pytest.approx(100 * (low_fn + 4) / 6)


def test_a_hit_at_the_window_start_scores_full_and_at_the_end_scores_a_false_positive() -> None:
    times = np.arange(60.0)
    true_cp = np.zeros(60)
    true_cp[10] = 1
    at_start, at_end = np.zeros(60), np.zeros(60)
    at_start[10], at_end[40] = 1, 1
    assert nab_tally(times, true_cp, at_start, 30.0).normalised()["standard"] == pytest.approx(100)
    assert nab_tally(times, true_cp, at_end, 30.0).score["standard"] == pytest.approx(-0.11)


def test_overlapping_windows_are_cut_on_the_right() -> None:
    times = np.arange(100.0)
    true_cp = np.zeros(100)
    true_cp[[10, 20]] = 1  # [10, 40] and [20, 50] overlap: the second becomes [40, 50]
    predicted = np.zeros(100)
    predicted[30] = 1  # inside the first window only; the second is missed
    tally = nab_tally(times, true_cp, predicted, 30.0)
    assert (tally.missed, tally.false_positives) == (1, 0)
    assert tally.score["standard"] == pytest.approx(skab_scale(20 / 30, 1.0, -0.11) - 1.0)


def test_no_changepoints_means_every_prediction_is_a_false_positive() -> None:
    predicted = np.zeros(20)
    predicted[[3, 7]] = 1
    tally = nab_tally(np.arange(20.0), np.zeros(20), predicted, 30.0)
    assert (tally.false_positives, tally.score["low_fp"]) == (2, pytest.approx(2 * -0.22))
    assert math.isclose(tally.normalised()["standard"], 0.0)
