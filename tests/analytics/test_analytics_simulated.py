"""The detector on the simulated sugar mill (stepped offline): quiet when healthy, quick on faults."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.detector import Detector, DetectorConfig, Scores
from analytics.grid import model_tags, modelable, out_of_mode
from analytics.live import LiveConfig
from analytics.plantcheck import PlantRuns, check, run_plant, simulate
from simulator import Kind, PlantModel

HEALTHY_S = int(LiveConfig().healthy_window_s)


def score_asset(series: dict[str, np.ndarray], asset: str) -> tuple[tuple[str, ...], Scores]:
    """Tags chosen as the live job chooses them; trained on the first healthy window."""
    plant = PlantModel(seed=1)
    kinds = {s.name: "bool" if s.kind is Kind.FLAG else "number" for s in plant.signals}
    names = {i: s.name for i, s in enumerate(plant.signals) if s.name.startswith(f"{asset}.")}
    ids = model_tags(names, {i: kinds[n] for i, n in names.items()}, LiveConfig().exclude)
    tags = [names[i] for i in ids if modelable(series[names[i]][:HEALTHY_S])]
    data = np.column_stack([series[t] for t in tags])
    if f"{asset}.state" in series:  # stopped or faulted: neither learned from nor scored
        data[out_of_mode(series[f"{asset}.state"], LiveConfig().running)] = np.nan
    detector = Detector(DetectorConfig(), tags).fit(data[:HEALTHY_S])
    assert detector.model is not None
    return detector.model.tags, detector.stream().update(data[HEALTHY_S:])


@pytest.fixture(scope="module")
def three_hours() -> dict[str, np.ndarray]:
    return run_plant(HEALTHY_S + 3 * 3600)


@pytest.mark.parametrize("asset", ["boiler1", "mill1", "mill2", "centrifugal2", "turbine1"])
def test_healthy_assets_raise_no_alarm_in_three_hours(three_hours: dict[str, np.ndarray], asset: str) -> None:
    _, scores = score_asset(three_hours, asset)  # the mills stop now and then: that is their normal
    assert not scores.is_anomaly.any()


def test_the_wearing_centrifugal_bearing_is_caught(three_hours: dict[str, np.ndarray]) -> None:
    tags, scores = score_asset(three_hours, "centrifugal1")  # its bearing wears by design
    assert not scores.is_anomaly[:3600].any()  # wear of the first hour is within the spin cycle's swing
    assert scores.is_anomaly[-1800:].mean() > 0.3
    blamed = {tags[j] for j in np.argmax(scores.contributions[scores.is_anomaly], axis=1)}
    assert blamed <= {"centrifugal1.vibration_rms", "centrifugal1.bearing_temp"}


def test_the_plant_gate_refuses_a_setting_that_flags_the_wear_too_late(three_hours: dict[str, np.ndarray]) -> None:
    """A larger margin and more smoothing (better on SKAB's healthy series) open the wear's
    first episode at 2.9 h instead of 2.1 h: the gate's wear bound refuses them."""
    runs = PlantRuns(three_hours, simulate(hours=0.0).faults)
    defaults = check(runs, DetectorConfig())
    assert defaults.wear_flagged is not None
    assert defaults.wear_flagged >= 0.3
    assert (defaults.wear_early, defaults.passed) == (False, True)
    late = check(runs, DetectorConfig(threshold_factor=3.0, smoothing=20))
    assert late.wear_flagged is not None
    assert late.wear_flagged < 0.3
    assert (late.false_alarm_points, late.passed) == (0, False)  # quiet on the healthy assets, and still refused


@pytest.mark.parametrize(
    ("asset", "hold", "blame"),
    [
        ("mill1", ("mill1.motor_current", 120.0), {"mill1.motor_current", "mill1.motor_power"}),  # feed choked
        ("boiler1", ("boiler1.steam_flow", 30.0), {"boiler1.steam_flow"}),  # a leaking steam valve
    ],
)
def test_a_fault_while_running_is_flagged_within_a_minute(asset: str, hold: tuple[str, float], blame: set[str]) -> None:
    start = HEALTHY_S + 300
    tags, scores = score_asset(run_plant(start + 120, hold_at=start, hold=hold), asset)
    assert not scores.is_anomaly[: start - HEALTHY_S].any()
    first = scores.opened[0] + HEALTHY_S  # the alarm; the episode's rows begin at its change's estimated start
    assert start <= first <= start + 60
    assert start - 5 <= scores.opened_from[0] + HEALTHY_S <= first
    assert tags[int(np.argmax(scores.contributions[first - HEALTHY_S]))] in blame
