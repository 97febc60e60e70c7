"""``factory analytics eval`` and ``run`` as an operator uses them (click's test runner)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from analytics.cli import analytics
from analytics.report import LEADERBOARD
from factory_bench.analytics import bench_analytics

SKAB = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "skab"


def write_skab(path: Path, rows: int, anomaly: slice | None, seed: int) -> None:
    """A file in SKAB's format: three sensors; sensor a shifts by six sigmas inside ``anomaly``."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 1, (rows, 3)) + np.array([5.0, 100.0, -3.0])
    labels = np.zeros(rows)
    if anomaly is not None:
        values[anomaly, 0] += 6.0
        labels[anomaly] = 1
    start = datetime(2020, 3, 9, 10, 0, tzinfo=UTC)
    lines = ["datetime;a;b;c" + (";anomaly;changepoint" if anomaly is not None else "")]
    for i in range(rows):
        stamp = (start + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
        fields = [stamp, *(f"{v:.5f}" for v in values[i])]
        if anomaly is not None:
            cp = i in (anomaly.start, anomaly.stop)
            fields += [f"{labels[i]:.1f}", f"{float(cp):.1f}"]
        lines.append(";".join(fields))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def skab_like(tmp_path: Path) -> Path:
    for n in range(3):
        write_skab(tmp_path / "valve" / f"{n}.csv", 700, slice(500 + 10 * n, 600 + 10 * n), seed=n)
    write_skab(tmp_path / "anomaly-free" / "anomaly-free.csv", 500, None, seed=9)
    return tmp_path


def test_eval_prints_one_json_object_with_skab_metrics(skab_like: Path) -> None:
    result = CliRunner().invoke(analytics, ["eval", "--skab", str(skab_like), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["files"] == 3
    assert report["skipped"] == ["anomaly-free/anomaly-free.csv"]
    assert report["test_points"] == 3 * 300
    assert report["anomalous_points"] == 3 * 100
    c = report["confusion"]
    assert c["tp"] + c["fn"] == 300
    assert c["tp"] + c["tn"] + c["fp"] + c["fn"] == 900
    assert report["f1"] == pytest.approx(c["tp"] / (c["tp"] + (c["fn"] + c["fp"]) / 2), abs=1e-4)
    assert report["f1"] > 0.9
    assert report["far"] < 10
    assert report["mar"] < 15
    assert report["changepoints"] == 6
    assert set(report["nab"]) == {"standard", "low_fp", "low_fn"}
    assert report["rates_unit"] == "percent"
    assert report["config"]["smoothing"] == 10


def test_eval_human_output_compares_with_the_leaderboard(skab_like: Path) -> None:
    result = CliRunner().invoke(analytics, ["eval", "--skab", str(skab_like)])
    assert result.exit_code == 0, result.output
    assert "all files (pooled)" in result.stdout
    assert "valve/2.csv" in result.stdout
    assert all(name in result.stdout for name, *_ in LEADERBOARD)


def test_eval_settings_can_be_changed_for_ablations(skab_like: Path) -> None:
    base = json.loads(CliRunner().invoke(analytics, ["eval", "--skab", str(skab_like), "--json"]).stdout)
    raw = CliRunner().invoke(analytics, ["eval", "--skab", str(skab_like), "--json", "--set", "smoothing=1"])
    assert raw.exit_code == 0, raw.output
    assert json.loads(raw.stdout)["config"]["smoothing"] == 1
    assert json.loads(raw.stdout)["confusion"] != base["confusion"]
    for bad in ("smoothing=0", "smoothin=3", "smoothing"):
        result = CliRunner().invoke(analytics, ["eval", "--skab", str(skab_like), "--set", bad])
        assert result.exit_code == 2, bad
        assert "--set" in result.stderr


def test_eval_names_the_file_and_line_of_bad_data(tmp_path: Path) -> None:
    write_skab(tmp_path / "0.csv", 450, slice(420, 440), seed=1)
    text = (tmp_path / "0.csv").read_text().splitlines()
    text[5] = text[5].replace(";", ";oops", 1)
    (tmp_path / "0.csv").write_text("\n".join(text) + "\n")
    result = CliRunner().invoke(analytics, ["eval", "--skab", str(tmp_path), "--json"])
    assert result.exit_code == 1
    assert f"{tmp_path / '0.csv'}:6" in result.stderr
    assert result.stdout == ""


def test_eval_refuses_a_folder_without_labelled_files(tmp_path: Path) -> None:
    write_skab(tmp_path / "anomaly-free.csv", 450, None, seed=1)
    result = CliRunner().invoke(analytics, ["eval", "--skab", str(tmp_path)])
    assert result.exit_code == 1
    assert "no labelled SKAB files" in result.stderr


@pytest.mark.skipif(not SKAB.is_dir(), reason=f"SKAB data not at {SKAB}")
def test_skab_beats_the_leaderboard_targets() -> None:
    """SKAB's protocol on the files present (anomaly-free and valve1 in this copy)."""
    result = CliRunner().invoke(analytics, ["eval", "--skab", str(SKAB), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["files"] == len(list(SKAB.rglob("*.csv"))) - len(report["skipped"])
    assert report["f1"] >= 0.80
    assert report["far"] <= 13.5
    assert report["mar"] <= 25.0


@pytest.mark.integration
def test_run_serves_health_and_stops_cleanly(database_url: str, mqtt_url: str, site: str) -> None:
    env = {"FACTORY_DATABASE_URL": database_url, "FACTORY_MQTT_URL": mqtt_url}
    result = CliRunner().invoke(analytics, ["run", "--site", site, "--port", "0", "--seconds", "1.5"], env=env)
    assert result.exit_code == 0, result.output
    assert "/healthz and /metrics on http://127.0.0.1:" in result.stderr


def test_run_reports_every_problem_in_its_config_file(tmp_path: Path) -> None:
    config = tmp_path / "analytics.yaml"
    config.write_text("step_s: -1\ndetector:\n  smoothing: 10\n  thresholdfactor: 2\n")
    result = CliRunner().invoke(analytics, ["run", "--config", str(config), "--seconds", "0"])
    assert result.exit_code == 2
    assert "2 problem(s)" in result.stderr
    assert "step_s" in result.stderr
    assert "thresholdfactor" in result.stderr


def test_bench_prints_one_json_line_with_the_ceiling() -> None:
    args = ["--rows", "200", "--fleet-rows", "100", "--chunk", "50", "--repeats", "1"]
    result = CliRunner().invoke(bench_analytics, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["one_asset"]["points"] == 200 * 8
    assert figures["hundred_assets"]["points"] == 100 * 100 * 8
    for load in ("one_asset", "hundred_assets"):
        assert figures[load]["points_per_s"] > 0
        assert figures[load]["ceiling_points_per_s"] > 0
    assert figures["ratio"] == min(figures["one_asset"]["ratio"], figures["hundred_assets"]["ratio"])
