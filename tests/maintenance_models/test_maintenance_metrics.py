"""RUL metrics against hand-computed cases: RMSE, the PHM08 score's sign convention, capping,
and the share of the uncapped error carried by the units above the cap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from maintenance_models.evaluate import CmapssReport
from maintenance_models.metrics import brier, failure_metrics, phm08_score, rmse, roc_auc, rul_metrics


def test_rmse_by_hand() -> None:
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert rmse([10], [10]) == 0.0


def test_phm08_score_punishes_late_predictions_more() -> None:
    early = phm08_score([10], [20])  # d = -10: exp(10/13) - 1
    late = phm08_score([30], [20])  # d = +10: exp(10/10) - 1
    assert early == pytest.approx(math.exp(10 / 13) - 1)
    assert late == pytest.approx(math.e - 1)
    assert late > early
    assert phm08_score([20], [20]) == 0.0
    assert phm08_score([10, 30, 20], [20, 20, 20]) == pytest.approx(early + late)


def test_capping_applies_to_rmse_and_score_not_to_rmse_uncapped() -> None:
    m = rul_metrics(predicted=[125, 100, 40], true=[150, 100, 50], cap=125)
    assert m.rmse == pytest.approx(math.sqrt(100 / 3))  # (0, 0, -10) against (125, 100, 50)
    assert m.rmse_uncapped == pytest.approx(math.sqrt((25**2 + 10**2) / 3))
    assert m.score == pytest.approx(math.exp(10 / 13) - 1)  # only the third unit is off
    assert m.score_uncapped == pytest.approx(math.exp(25 / 13) - 1 + math.exp(10 / 13) - 1)
    assert m.units == 3
    assert m.cap == 125


def test_mismatched_or_empty_inputs_are_errors() -> None:
    with pytest.raises(ValueError, match="same length"):
        rmse([1, 2], [1])
    with pytest.raises(ValueError, match="non-empty"):
        phm08_score([], [])


def test_failure_probability_metrics() -> None:
    assert brier([1.0, 0.0, 0.5], [1, 0, 1]) == pytest.approx(0.25 / 3)
    assert roc_auc([0.9, 0.8, 0.1], [1, 0, 0]) == 1.0
    assert roc_auc([0.5, 0.5], [1, 0]) == 0.5
    assert roc_auc([0.5, 0.4], [0, 0]) is None
    m = failure_metrics([0.9, 0.2, 0.6], true_rul=[5, 80, 30], horizon=30)
    assert m.positives == 2  # RUL 5 and 30 fail within 30 cycles
    assert m.auc == 1.0
    assert m.brier == pytest.approx((0.01 + 0.04 + 0.16) / 3)


def test_units_above_the_cap_and_the_uncapped_floor() -> None:
    true = np.array([150.0, 100.0, 50.0, 135.0])
    predicted = np.array([120.0, 104.0, 50.0, 125.0])
    report = CmapssReport(
        subset="FD900", rul=rul_metrics(predicted, true, 125), failure=failure_metrics([0.0] * 4, true, 30),
        unit=np.arange(1, 5), true_rul=true, predicted=predicted, failure_prob=np.zeros(4), regimes=1,
        sensors_used=1, train_units=2, train_seconds=0.0, predict_seconds=0.0,
    )  # fmt: skip
    above = report.above_cap()
    assert above["above_cap_units"] == 2
    assert above["above_cap_true_mean"] == 142.5
    assert above["above_cap_predicted_mean"] == 122.5
    assert above["above_cap_sse_share"] == pytest.approx((30**2 + 10**2) / (30**2 + 4**2 + 10**2), abs=1e-4)
    assert above["rmse_uncapped_below_cap"] == pytest.approx(math.sqrt(16 / 2), abs=1e-4)
    assert above["rmse_uncapped_floor"] == pytest.approx(math.sqrt((25**2 + 10**2) / 4), abs=1e-4)
    assert report.as_dict()["rmse_uncapped"] == pytest.approx(math.sqrt((30**2 + 4**2 + 10**2) / 4), abs=1e-4)
