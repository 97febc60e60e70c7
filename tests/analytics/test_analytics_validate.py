"""``factory analytics validate``: settings chosen per fold without the fold's files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from analytics.cli import analytics
from analytics.detector import DetectorConfig
from analytics.metrics import Confusion, NabTally
from analytics.plantcheck import check, simulate
from analytics.skab import TRAIN_ROWS, evaluate_file
from analytics.validate import HEALTHY, SHIFTED, Series, load_series, validate

FOLDS = 2


def write(path: Path, values: np.ndarray, anomaly: np.ndarray | None) -> None:
    """A SKAB-format file (labelled when ``anomaly`` is given; changepoints where it flips)."""
    start = datetime(2020, 3, 9, 10, 0, tzinfo=UTC)
    lines = ["datetime;a;b;c" + (";anomaly;changepoint" if anomaly is not None else "")]
    for i, row in enumerate(values):
        fields = [(start + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S"), *(f"{v:.5f}" for v in row)]
        if anomaly is not None:
            flip = i > 0 and anomaly[i] != anomaly[i - 1]
            fields += [f"{anomaly[i]:.1f}", f"{float(flip):.1f}"]
        lines.append(";".join(fields))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Four labelled files (sensor a up by 4 sigmas in rows 500-600) and 4 chunks of a healthy file."""
    rng = np.random.default_rng(3)
    for n in range(4):
        values = rng.normal(0, 1, (700, 3)) + np.array([5.0, 100.0, -3.0])
        anomaly = np.zeros(700)
        anomaly[500:600] = 1
        values[500:600, 0] += 4.0
        write(tmp_path / "valve" / f"{n}.csv", values, anomaly)
    healthy = rng.normal(0, 1, (4 * (TRAIN_ROWS + 200) + 50, 3)) + np.array([5.0, 100.0, -3.0])
    healthy[TRAIN_ROWS + 200 :, 1] += 0.3  # the second chunk on: a small level shift
    write(tmp_path / "anomaly-free" / "anomaly-free.csv", healthy, None)
    return tmp_path


def test_series_are_labelled_files_and_chunks_of_the_healthy_file(folder: Path) -> None:
    series = load_series(folder, FOLDS, test_rows=200)
    groups = [s.group for s in series]
    assert groups.count("valve") == 4
    assert groups.count(HEALTHY) == 4  # 4 whole chunks of 600 rows; the 50 left over are not used
    assert groups.count(SHIFTED) == 4  # each chunk's training part with its pair's test part
    by_name = {s.data.name: s for s in series}
    own, shifted, partner = by_name["anomaly-free/anomaly-free[0]"], by_name["anomaly-free/anomaly-free[0>1]"], \
        by_name["anomaly-free/anomaly-free[1]"]  # fmt: skip
    np.testing.assert_array_equal(shifted.data.values[:TRAIN_ROWS], own.data.values[:TRAIN_ROWS])
    np.testing.assert_array_equal(shifted.data.values[TRAIN_ROWS:], partner.data.values[TRAIN_ROWS:])
    assert own.fold == shifted.fold == partner.fold  # a pair of chunks is one fold: no rows shared across folds
    assert not any(s.data.anomaly.any() for s in series if s.group != "valve")
    assert sorted(s.fold for s in series if s.group == "valve") == [0, 0, 1, 1]


CANDIDATES = [
    DetectorConfig(threshold_factor=0.5),  # alarms on normal data
    DetectorConfig(threshold_factor=2.0),
    DetectorConfig(threshold_factor=50.0),  # misses everything
]


def test_each_fold_is_chosen_without_its_files_and_scored_with_that_choice(folder: Path) -> None:
    series = load_series(folder, FOLDS, test_rows=200)
    report = validate(series, CANDIDATES, folds=FOLDS, max_mar=25.0)
    for fold in range(FOLDS):
        assert CANDIDATES[report.chosen[fold].candidate].threshold_factor == 2.0  # the only one that meets MAR
        chosen = report.chosen_change[fold]  # ... without alarming on normal data, with its changepoint settings
        assert chosen.threshold_factor == 2.0
        for group, figures in report.held_out[fold].items():
            recomputed = Confusion()
            for s in series:
                if s.fold == fold and s.group == group:
                    recomputed = recomputed + evaluate_file(s.data, chosen).confusion
            assert figures.confusion == recomputed
    pooled = sum((f.confusion for f in report.pooled.values()), Confusion())
    assert pooled.tp + pooled.tn + pooled.fp + pooled.fn == sum(len(s.data.times) - TRAIN_ROWS for s in series)
    assert set(report.spread()["valve"]) == {"far", "mar", "f1", "nab_standard"}
    assert set(report.spread()[HEALTHY]) == {"far"}  # no anomalies there: only the false-alarm rate


def test_the_held_out_files_do_not_change_their_folds_choice(folder: Path) -> None:
    """Fold 0's choice depends only on fold 1: relabelling fold 0's files changes nothing in it."""
    series = load_series(folder, FOLDS, test_rows=200)
    base = validate(series, CANDIDATES, folds=FOLDS)
    spoiled = [Series(s.data.__class__(s.data.name, s.data.times, s.data.columns, s.data.values,
                                       np.ones_like(s.data.anomaly), s.data.changepoint), s.group, s.fold)
               if s.fold == 0 else s for s in series]  # fmt: skip
    again = validate(spoiled, CANDIDATES, folds=FOLDS)
    assert again.chosen[0] == base.chosen[0]
    assert again.final.candidate != base.final.candidate  # where the spoiled files are seen, the choice moves


def test_the_changepoint_settings_are_chosen_per_fold_by_nab_without_the_folds_files(folder: Path) -> None:
    """Fold 0's changepoint choice depends only on fold 1: moving fold 0's true changepoints
    changes nothing in it; its held-out NAB figures are its series scored with that choice."""
    series = load_series(folder, FOLDS, test_rows=200)
    grid = {"change_window": (5, 20), "change_factor": (1.0, 50.0)}
    base = validate(series, CANDIDATES, folds=FOLDS, change_grid=grid)
    for fold in range(FOLDS):
        chosen = base.chosen_change[fold]
        assert chosen.threshold_factor == CANDIDATES[base.chosen[fold].candidate].threshold_factor
        assert chosen.change_factor == 1.0  # a line 50 times the healthy window's finds none of the steps
        tally = NabTally()
        for s in series:
            if s.fold == fold:
                tally.add(evaluate_file(s.data, chosen).nab)
        held = NabTally()
        for figures in base.held_out[fold].values():
            held.add(figures.nab)
        assert (held.false_positives, held.missed, held.normalised()) == (
            tally.false_positives, tally.missed, tally.normalised())  # fmt: skip
    moved = [Series(s.data.__class__(s.data.name, s.data.times, s.data.columns, s.data.values, s.data.anomaly,
                                     np.roll(s.data.changepoint, 150)), s.group, s.fold)
             if s.fold == 0 else s for s in series]  # fmt: skip
    again = validate(moved, CANDIDATES, folds=FOLDS, change_grid=grid)
    assert again.chosen_change[0] == base.chosen_change[0]


def test_the_simulated_plant_gate_passes_the_defaults_and_stops_a_jumpy_setting() -> None:
    runs = simulate(hours=0.5)
    assert check(runs, DetectorConfig()).passed
    jumpy = check(runs, DetectorConfig(threshold_factor=0.3, level_floor=0.0))
    assert jumpy.false_alarm_points > 0
    assert not jumpy.passed


def test_validate_prints_folds_spread_and_the_chosen_settings(folder: Path) -> None:
    result = CliRunner().invoke(analytics, ["validate", "--skab", str(folder), "--folds", "2", "--test-rows", "200",
                                            "--no-plant", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["folds"]) == 2
    assert {f for fold in report["folds"] for f in fold["files"]} >= {"valve/0.csv", "valve/3.csv"}
    per_series = {s["series"]: s for fold in report["folds"] for s in fold["per_series"]}
    assert len(per_series) == 12  # 4 labelled files, 4 healthy chunks, 4 shifted ones: each held out once
    assert "mar" in per_series["valve/0.csv"]
    assert "mar" not in per_series["anomaly-free/anomaly-free[0]"]
    assert set(report["held_out"]) == {"valve", HEALTHY, SHIFTED}
    assert report["held_out"]["valve"]["nab"].keys() == {"standard", "low_fp", "low_fn"}
    assert "changepoint_false_positives" in report["held_out"][HEALTHY]
    assert report["spread"]["valve"]["far"].keys() == {"mean", "sd", "min", "max"}
    assert set(report["chosen"]) == {"level_floor", "calibration", "threshold_factor", "smoothing", "open_after",
                                     "backdate", "change_window", "change_factor"}  # fmt: skip
    assert (
        report["held_out"]["valve"]["changepoint_false_negatives"] == report["held_out"]["valve"]["changepoints_missed"]
    )
    assert set(report["folds"][0]["settings"]) == set(report["chosen"])
    assert report["plant"] is None
    text = CliRunner().invoke(analytics, ["validate", "--skab", str(folder), "--folds", "2", "--test-rows", "200",
                                          "--no-plant"])  # fmt: skip
    assert "chosen on every fold (the defaults)" in text.stdout
    assert "(held out)" in text.stdout
