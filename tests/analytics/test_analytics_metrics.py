"""SKAB's metrics, checked against values computed by hand from SKAB's definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analytics.detector import DetectorConfig
from analytics.errors import DatasetError
from analytics.metrics import Confusion, changepoints_of, confusion, nab_tally
from analytics.report import as_dict
from analytics.skab import SkabFile, SkabReport, score_predictions


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


def _hand_file() -> tuple[SkabFile, np.ndarray]:
    """A 400-row training part and 20 test rows 10 s apart: anomalies at test rows 3-9 and 16-17,
    changepoints at 3, 10 and 16; the flags at 4-10 and 14."""
    rows = 420
    anomaly, changepoint, flags = np.zeros(rows, np.int8), np.zeros(rows, np.int8), np.zeros(20, bool)
    anomaly[400 + np.r_[3:10, 16:18]] = 1
    changepoint[400 + np.array([3, 10, 16])] = 1
    flags[np.r_[4:11, 14]] = True
    times = np.r_[np.arange(400.0) - 400.0, np.arange(20) * 10.0]
    return SkabFile("hand.csv", times, ("a",), np.zeros((rows, 1)), anomaly, changepoint), flags


def test_the_eval_report_gives_nab_beside_the_point_metrics_on_a_hand_computed_file() -> None:
    """One file: 400 training rows, then 20 test rows 10 s apart (test times 0, 10, ..., 190 s).

    Labels of the test part: anomalous rows 3-9 and 16-17; true changepoints at rows 3, 10 and
    16, so the 30 s windows to their right are [30, 60], [100, 130] and [160, 190] s.
    Predictions: rows 4-10 and row 14 flagged. Their flips (the predicted changepoints) are at
    rows 4, 11, 14 and 15, i.e. 40, 110, 140 and 150 s.

    Point metrics: TP = rows 4-9 = 6, FP = rows 10 and 14 = 2, FN = rows 3, 16, 17 = 3,
    TN = 20 - 11 = 9; F1 = 6 / (6 + 5/2) = 0.7059, FAR = 2/11 = 18.18 %, MAR = 3/9 = 33.33 %.

    Changepoints: 40 s is the first hit in [30, 60] and 110 s in [100, 130], each a third of
    the way in; 140 and 150 s fall between windows (2 false positives); [160, 190] is empty
    (1 false negative). A third of the way in is step int(1000/3) = 333 of SKAB's 1000-step
    curve, x = -pi/2 + pi * 333/999 = -pi/6, so a hit scores
    (A_tp - A_fp)/2 * tanh(pi/6)/tanh(pi/2) + (A_tp + A_fp)/2, with
    tanh(pi/6)/tanh(pi/2) = 0.480473/0.917152 = 0.523875:
      standard (1, -0.11, -1): hit 0.555*0.523875 + 0.445 = 0.735750;
        score 2*0.735750 - 2*0.11 - 1 = 0.251501; null -3, perfect 3: 100*3.251501/6 = 54.19
      low FP (1, -0.22, -1): hit 0.61*0.523875 + 0.39 = 0.709563;
        score 1.419127 - 0.44 - 1 = -0.020873: 100*2.979127/6 = 49.65
      low FN (1, -0.11, -2): score 1.471501 - 0.22 - 2 = -0.748499; null -6: 100*5.251501/9 = 58.35
    """
    data, flags = _hand_file()
    report = as_dict(SkabReport(files=[score_predictions(data, flags)]), DetectorConfig())
    assert report["confusion"] == {"tp": 6, "tn": 9, "fp": 2, "fn": 3}
    assert (report["f1"], report["far"], report["mar"]) == (0.7059, 18.18, 33.33)
    assert report["nab"] == {"standard": 54.19, "low_fp": 49.65, "low_fn": 58.35}
    assert report["changepoints"] == 3
    assert report["changepoints_detected"] == 2
    assert report["changepoint_false_negatives"] == report["changepoints_missed"] == 1
    assert report["changepoint_false_positives"] == 2
    assert report["per_file"][0]["changepoint_false_positives"] == 2


def test_nab_is_scored_on_the_changepoint_output_when_there_is_one() -> None:
    """The hand-computed file above, with the detector's changepoints given apart from its flags:
    the point metrics stay those of the flags; changepoints at rows 3, 10 and 16 each open
    their window (score A_tp = 1), so every profile is perfect (100) with no FP or FN; one more
    at row 13 (130 s, the end of the second window) is inside it but not the first there."""
    data, flags = _hand_file()
    changes = np.zeros(20, bool)
    changes[[3, 10, 13, 16]] = True
    report = as_dict(SkabReport(files=[score_predictions(data, flags, changes)]), DetectorConfig())
    assert report["confusion"] == {"tp": 6, "tn": 9, "fp": 2, "fn": 3}
    assert report["nab"] == {"standard": 100.0, "low_fp": 100.0, "low_fn": 100.0}
    assert (report["changepoint_false_positives"], report["changepoint_false_negatives"]) == (0, 0)
    with pytest.raises(DatasetError, match="changepoint flags"):
        score_predictions(data, flags, changes[:10])
