"""The anomaly detector on small synthetic series whose anomalies are known."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.detector import Detector, DetectorConfig, Model, Stream, StreamState
from analytics.errors import NotFittedError, TooLittleDataError

TAGS = ("flow", "pressure", "temp", "vib")


def plant(rows: int, seed: int) -> np.ndarray:
    """Four tags: flow and pressure correlated, temp drifting slowly, vib noise."""
    rng = np.random.default_rng(seed)
    flow = 50 + rng.normal(0, 0.5, rows)
    pressure = 3 + 0.05 * (flow - 50) + rng.normal(0, 0.02, rows)
    temp = 60 + 0.02 * np.arange(rows) + rng.normal(0, 0.05, rows)
    vib = 2 + rng.normal(0, 0.1, rows)
    return np.column_stack([flow, pressure, temp, vib])


def fitted(data: np.ndarray, config: DetectorConfig | None = None) -> Detector:
    """Trained on the first 400 rows; the tests score what follows them."""
    return Detector(config or DetectorConfig(), TAGS).fit(data[:400])


def test_a_shift_in_one_tag_is_flagged_and_blamed_on_that_tag() -> None:
    data = plant(600, seed=2)
    test = data[400:]  # continues the same process, drift included
    test[100:160, 0] -= 2.5  # flow down five noise sigmas for 60 samples
    scores = fitted(data).stream().update(test)
    flagged = np.flatnonzero(scores.is_anomaly)
    assert flagged.size >= 50
    assert 100 <= flagged.min() <= 110  # from the change's estimated start (backdate) ...
    assert 160 <= flagged.max() <= 185
    assert len(scores.opened) == 1  # ... though the episode opened later
    assert flagged.min() == scores.opened_from[0] < scores.opened[0] <= 125
    assert scores.closed == [int(flagged.max()) + 1]
    blamed = np.argmax(scores.contributions[flagged], axis=1)
    assert np.mean(blamed == 0) > 0.9  # flow; pressure shares the blame as flow recovers (they move together)
    assert np.argmax(scores.contributions[flagged].sum(axis=0)) == 0
    np.testing.assert_allclose(scores.contributions.sum(axis=1), scores.score)


def test_healthy_data_raises_no_alarm_though_a_tag_drifts() -> None:
    data = plant(1000, seed=1)
    detector = fitted(data)
    assert detector.model is not None
    widen = dict(zip(detector.model.tags, detector.model.widen, strict=True))
    assert widen["temp"] > 3  # the drifting tag gets wide limits ...
    assert widen["flow"] == widen["vib"] == 1.0  # ... noise-like tags keep tight ones
    scores = detector.stream().update(data[400:])  # 600 more samples: temp drifts 12 units beyond training
    assert not scores.is_anomaly.any()


def test_without_drift_widening_the_same_drift_is_a_false_alarm() -> None:
    data = plant(1000, seed=1)
    scores = fitted(data, DetectorConfig(drift_ratio=1e9)).stream().update(data[400:])
    assert scores.is_anomaly[-200:].all()  # from some point on the drift alone keeps the alarm up
    assert np.all(np.argmax(scores.contributions[-200:], axis=1) == 2)  # blamed on temp


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_scoring_in_pieces_equals_scoring_at_once(cuts: list[int]) -> None:
    data = plant(600, seed=3)
    detector = fitted(data)
    test = data[400:]
    test[60:120, 1] += 0.2  # a pressure fault: ten noise sigmas
    whole = detector.stream().update(test)
    stream = detector.stream()
    parts = [stream.update(test[a:b]) for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(test)], strict=True)]
    np.testing.assert_allclose(np.concatenate([p.score for p in parts]), whole.score, rtol=1e-9, atol=1e-12)
    offsets = np.cumsum([0, *[len(p.score) for p in parts]])
    flags = np.concatenate([p.is_anomaly for p in parts])
    for offset, part in zip(offsets, parts, strict=False):
        flags[offset - part.earlier : offset] = True  # rows of earlier pieces an opening took in
    assert np.array_equal(flags, whole.is_anomaly)
    assert [int(o + i) for o, p in zip(offsets, parts, strict=False) for i in p.opened] == whole.opened
    assert [int(o + i) for o, p in zip(offsets, parts, strict=False) for i in p.closed] == whole.closed


def test_a_stored_model_and_state_score_exactly_like_the_live_ones() -> None:
    data = plant(600, seed=4)
    detector = fitted(data)
    assert detector.model is not None
    test = data[400:]
    stream = detector.stream()
    stream.update(test[:100])
    saved_model, saved_state = detector.model.to_json(), StreamState.from_dict(stream.state.to_dict())
    expected = stream.update(test[100:])
    restored = Detector(DetectorConfig(), TAGS, Model.from_json(saved_model)).stream(saved_state).update(test[100:])
    np.testing.assert_array_equal(restored.score, expected.score)


def test_missing_values_hold_the_average() -> None:
    data = plant(500, seed=5)
    detector = fitted(data)
    test = data[400:]
    holes = test.copy()
    holes[40:50, 2] = np.nan
    with_holes = detector.stream().update(holes)
    assert np.isfinite(with_holes.score).all()
    np.testing.assert_allclose(with_holes.score[:40], detector.stream().update(test[:40]).score)


def test_a_constant_tag_is_left_out_and_named() -> None:
    data = plant(300, seed=6)
    data[:, 3] = 7.0
    detector = Detector(DetectorConfig(), TAGS).fit(data)
    assert detector.model is not None
    assert detector.model.tags == TAGS[:3]
    assert detector.model.excluded == ("vib",)


def test_too_little_or_wrongly_shaped_data_is_refused() -> None:
    with pytest.raises(TooLittleDataError, match="healthy rows"):
        Detector(DetectorConfig(), TAGS).fit(plant(20, seed=1))
    with pytest.raises(TooLittleDataError, match="4 tags"):
        Detector(DetectorConfig(), TAGS).fit(plant(100, seed=1)[:, :3])
    with pytest.raises(TooLittleDataError, match="no tag varies"):
        Detector(DetectorConfig(), TAGS).fit(np.ones((100, 4)))
    with pytest.raises(NotFittedError):
        Detector(DetectorConfig(), TAGS).stream()
    with pytest.raises(ValueError, match="rows must be n x 4"):
        fitted(plant(400, seed=1)).stream().update(np.zeros((5, 3)))


def one_tag_stream(config: DetectorConfig) -> Stream:
    """score = value squared: a stream whose scores the test writes directly."""
    model = Model(tags=("x",), mean=np.zeros(1), scale=np.ones(1), widen=np.ones(1), precision=np.ones((1, 1)),
                  threshold=1.0, last=np.zeros(1))  # fmt: skip
    return Stream(config, model, StreamState(np.zeros(1)))


def test_episodes_open_after_k_points_above_and_close_after_m_points_below() -> None:
    config = DetectorConfig(smoothing=1, open_after=3, close_ratio=0.5, close_after=2, backdate=False)
    wanted = np.array([0, 2, 2, 0, 2, 2, 2, 2, 0.9, 2, 0.25, 0.25, 2, 0])  # the scores, in alarm-line units
    scores = one_tag_stream(config).update(np.sqrt(wanted)[:, np.newaxis])
    np.testing.assert_allclose(scores.score, wanted)
    expected = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0]
    assert scores.is_anomaly.astype(int).tolist() == expected
    assert (scores.opened, scores.closed) == ([6], [11])


def test_a_backdated_episode_takes_in_the_rows_from_its_change_even_in_an_earlier_batch() -> None:
    """Scores 0.01/0.04 for 100 rows, 0.81 (below the line, but a change) from row 100, 4 from
    row 105: the episode opens at row 107, its third point above the line; the change began at
    row 100 (the likeliest split), so with ``backdate`` the episode's rows start there."""
    wanted = np.array([0.01, 0.04] * 50 + [0.81] * 5 + [4.0] * 20)
    rows = np.sqrt(wanted)[:, np.newaxis]
    late = one_tag_stream(DetectorConfig(smoothing=1, open_after=3, backdate=False)).update(rows)
    assert (late.opened, late.opened_from, int(np.flatnonzero(late.is_anomaly)[0])) == ([107], [100], 107)
    config = DetectorConfig(smoothing=1, open_after=3)
    scores = one_tag_stream(config).update(rows)
    assert (scores.opened, scores.opened_from, scores.earlier) == ([107], [100], 0)
    assert np.flatnonzero(scores.is_anomaly).tolist() == list(range(100, 125))
    stream = one_tag_stream(config)
    first, second = stream.update(rows[:106]), stream.update(rows[106:])
    assert (first.opened, not first.is_anomaly.any()) == ([], True)
    assert (second.opened, second.opened_from, second.earlier) == ([1], [-6], 6)  # rows 100-105 of the first
    assert second.is_anomaly.all()


def test_config_rejects_unknown_and_impossible_settings() -> None:
    with pytest.raises(ValueError, match="extra"):
        DetectorConfig(smoothin=5)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="close_ratio"):
        DetectorConfig(close_ratio=1.5)


def test_a_calibrated_threshold_comes_from_the_held_out_end_of_the_window() -> None:
    data = plant(400, seed=4)
    config = DetectorConfig(calibration=0.25, threshold_factor=1.5, smoothing=10)
    calibrated = Detector(config, TAGS).fit(data).model
    head = Detector(config.model_copy(update={"calibration": 0.0}), TAGS).fit(data[:300])
    assert head.model is not None
    assert calibrated is not None
    stream = head.stream()
    raw = stream.update(data[300:]).score * head.model.threshold  # distances of rows the fit never saw
    assert calibrated.threshold == pytest.approx(np.quantile(raw, 0.99) * 1.5)
    assert calibrated.threshold > head.model.threshold  # unseen rows stray further than the fitted ones
    np.testing.assert_allclose(calibrated.mean, head.model.mean)  # fitted on the first 300 rows only
    np.testing.assert_allclose(calibrated.last, stream.state.smoothed)  # scoring continues after row 400


def test_the_level_floor_lets_a_quiet_tag_drift_by_less_than_it() -> None:
    rng = np.random.default_rng(5)
    rows = np.column_stack([200 + rng.normal(0, 0.05, 900), 50 + rng.normal(0, 1.0, 900)])
    rows[400:, 0] += np.linspace(0, 0.4, 500)  # 0.2 % of the level: 8 noise sigmas by the end
    tags = ("quiet", "noisy")
    strict = Detector(DetectorConfig(level_floor=0.0), tags).fit(rows[:400]).stream().update(rows[400:])
    floored = Detector(DetectorConfig(level_floor=0.005), tags).fit(rows[:400]).stream().update(rows[400:])
    assert strict.is_anomaly[-100:].all()
    assert not floored.is_anomaly.any()
    stepped = rows.copy()
    stepped[700:, 0] += 4.0  # 2 % of the level: a fault for either
    assert Detector(DetectorConfig(), tags).fit(stepped[:400]).stream().update(stepped[400:]).is_anomaly[320:].all()
