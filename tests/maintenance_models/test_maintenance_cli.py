"""``factory maintenance``: eval and train on C-MAPSS-format folders, the registry commands,
and one evaluation on NASA's FD001 when the dataset is on this machine."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_maintenance_data import write_synthetic

from maintenance_models.cli import maintenance

QUICK = ["--set", "ensemble=1", "--set", "max_iter=40", "--set", "classifier_max_iter=40"]
QUICK += ["--set", "learning_rate=0.1", "--set", "max_regimes=4"]
CMAPSS = Path(os.environ.get("FACTORY_CMAPSS_DIR", Path(__file__).resolve().parents[3] / "shared/datasets/cmapss"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("cmapss"), units=20, seed=11)


def test_eval_prints_one_json_object_and_writes_the_plot(folder: Path, tmp_path: Path) -> None:
    plot = tmp_path / "rul.png"
    args = ["eval", "--cmapss", str(folder), "--subset", "FD901", "--json", "--plot", str(plot), *QUICK]
    result = CliRunner().invoke(maintenance, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["subset"] == "FD901"
    assert report["units"] == 10
    assert report["cap"] == 125.0
    assert {"rmse", "rmse_uncapped", "score", "failure_brier", "failure_auc", "train_seconds"} <= report.keys()
    assert 0 < report["rmse"] < 40
    assert report["score"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_human_output(folder: Path) -> None:
    result = CliRunner().invoke(maintenance, ["eval", "--cmapss", str(folder), "--subset", "FD901", *QUICK])
    assert result.exit_code == 0, result.output
    assert "RMSE (truth capped at 125)" in result.stdout
    assert "PHM08 score" in result.stdout


def test_eval_errors_name_the_problem(folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(maintenance, ["eval", "--cmapss", str(tmp_path), "--subset", "FD001"])
    assert missing.exit_code == 1
    assert "train_FD001.txt: no such file" in missing.output
    bad = runner.invoke(maintenance, ["eval", "--cmapss", str(folder), "--subset", "FD901", "--set", "cap=-1"])
    assert bad.exit_code == 2
    assert "cap" in bad.output
    unknown = runner.invoke(maintenance, ["eval", "--cmapss", str(folder), "--subset", "FD901", "--set", "capp=1"])
    assert unknown.exit_code == 2
    assert "Extra inputs are not permitted" in unknown.output
    bad_kind = runner.invoke(maintenance, ["train", "--cmapss", str(folder), "--subset", "FD901", "--kind", "Bad Kind"])
    assert bad_kind.exit_code == 2
    assert "'Bad Kind': use lower-case letters" in bad_kind.output


def test_train_writes_the_artifact_without_a_database(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FACTORY_DATABASE_URL", raising=False)
    out = tmp_path / "model.pkl"
    args = ["train", "--cmapss", str(folder), "--subset", "FD901", "--output", str(out), "--json", *QUICK]
    result = CliRunner().invoke(maintenance, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["version"] is None
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert payload["sha256"] == digest
    assert (tmp_path / "model.pkl.sha256").read_text() == f"{digest}  model.pkl\n"
    assert payload["metrics"]["units"] == 10


def _check_summary(summary: dict[str, Any], seeds: list[int]) -> None:
    """Each figure's mean and sample standard deviation are those of the per-seed runs."""
    assert summary["seeds"] == seeds
    assert [run["seed"] for run in summary["runs"]] == seeds
    for key in ("rmse", "rmse_uncapped", "score", "score_uncapped"):
        values = [run[key] for run in summary["runs"]]
        assert summary[key]["values"] == values
        assert summary[key]["mean"] == pytest.approx(statistics.mean(values), abs=1e-4)
        assert summary[key]["sd"] == pytest.approx(statistics.stdev(values), abs=1e-4)


def test_eval_over_seeds_gives_mean_and_spread_of_the_single_runs(folder: Path) -> None:
    runner = CliRunner()
    args = ["eval", "--cmapss", str(folder), "--subset", "FD901", "--json", *QUICK]
    result = runner.invoke(maintenance, [*args, "--seeds", "2", "--set", "seed=3"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    _check_summary(summary, [3, 4])
    assert summary["runs"][0]["rmse"] != summary["runs"][1]["rmse"]  # the seed changes the model
    single = json.loads(runner.invoke(maintenance, [*args, "--set", "seed=4"]).stdout)
    assert single["rmse"] == summary["runs"][1]["rmse"]  # the same run as on its own
    assert single["score_uncapped"] == summary["runs"][1]["score_uncapped"]
    assert summary["above_cap_units"] == sum(t > 125 for t in _truth(folder))
    text = runner.invoke(maintenance, ["eval", "--cmapss", str(folder), "--subset", "FD901", "--seeds", "2", *QUICK])
    assert "seeds 0..1 (2 runs), mean ± standard deviation" in text.stdout
    assert "PHM08 score (truth as given)" in text.stdout


def _truth(folder: Path) -> list[float]:
    return [float(v) for v in (folder / "RUL_FD901.txt").read_text().split()]


def test_cv_reads_the_training_file_only(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "train_FD901.txt").write_bytes((folder / "train_FD901.txt").read_bytes())
    args = ["cv", "--cmapss", str(tmp_path), "--subset", "FD901", "--folds", "4", "--cuts", "5", "--json", *QUICK]
    args += ["--set", "ensemble=3"]
    result = CliRunner().invoke(maintenance, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["folds"] == 4
    assert len(report["fold_rmse"]) == 4
    assert report["predictions"] == 20 * 5  # 20 units, 5 cycles each
    assert len(report["members_rmse"]) == 3
    assert report["members_rmse"][-1] == report["rmse"]  # the full ensemble is what is scored
    assert 0 < report["rmse"] < 40
    again = CliRunner().invoke(maintenance, args)
    assert json.loads(again.stdout) == report  # folds, cuts and trees come from the seed


@pytest.mark.integration
def test_train_registers_then_promote_and_roll_back(
    folder: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACTORY_DATABASE_URL", database_url)
    runner = CliRunner()
    kind = f"cli-{uuid.uuid4().hex[:8]}"
    versions = []
    for _ in range(2):
        args = ["train", "--cmapss", str(folder), "--subset", "FD901", "--kind", kind, "--json", *QUICK]
        result = runner.invoke(maintenance, args)
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        assert payload["kind"] == kind
        versions.append(payload["version"])
    first, second = versions
    assert second > first
    listed = json.loads(runner.invoke(maintenance, ["models", "--kind", kind, "--json"]).stdout)["models"]
    assert [m["version"] for m in listed] == versions
    assert listed[0]["training_data"]["source"] == "cmapss"
    assert listed[0]["training_data"]["units"] == 20
    assert "rmse" in listed[0]["metrics"]
    assert runner.invoke(maintenance, ["promote", str(first)]).exit_code == 0
    nothing = runner.invoke(maintenance, ["rollback", "--kind", kind])
    assert nothing.exit_code == 1
    assert "nothing to roll back to" in nothing.output
    promoted = runner.invoke(maintenance, ["promote", str(second)])
    assert f"{kind}: version {second} is live" in promoted.output
    back = runner.invoke(maintenance, ["rollback", "--kind", kind])
    assert back.exit_code == 0, back.output
    assert f"version {first} is live" in back.output
    listed = json.loads(runner.invoke(maintenance, ["models", "--kind", kind, "--json"]).stdout)["models"]
    assert [m["live"] for m in listed] == [True, False]
    unknown = runner.invoke(maintenance, ["promote", "2000000000"])
    assert unknown.exit_code == 1
    assert "no model version 2000000000" in unknown.output


@pytest.mark.slow
@pytest.mark.skipif(not (CMAPSS / "train_FD001.txt").is_file(), reason=f"C-MAPSS not found in {CMAPSS}")
def test_nasa_fd001_with_a_reduced_configuration() -> None:
    """Full configuration: see docs/maintenance.md; this one trains in seconds."""
    reduced = [
        "--set",
        "ensemble=1",
        "--set",
        "max_iter=100",
        "--set",
        "classifier_max_iter=50",
        "--set",
        "learning_rate=0.1",
    ]
    result = CliRunner().invoke(maintenance, ["eval", "--cmapss", str(CMAPSS), "--subset", "FD001", "--json", *reduced])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["units"] == 100
    assert report["regimes"] == 1
    assert report["sensors_used"] == 14
    assert report["rmse"] < 12.5
    assert report["score"] < 320
    assert report["rmse_uncapped"] > report["rmse"]  # 11 test units are more than 125 cycles from failure
    assert report["above_cap_units"] == 11


@pytest.mark.slow
@pytest.mark.skipif(not (CMAPSS / "train_FD001.txt").is_file(), reason=f"C-MAPSS not found in {CMAPSS}")
def test_nasa_fd001_over_two_seeds() -> None:
    """``--seeds``: each run is scored on the official test split; mean and sd are theirs."""
    reduced = ["--set", "ensemble=1", "--set", "max_iter=100", "--set", "classifier_max_iter=50"]
    reduced += ["--set", "learning_rate=0.1"]
    args = ["eval", "--cmapss", str(CMAPSS), "--subset", "FD001", "--json", "--seeds", "2", *reduced]
    result = CliRunner().invoke(maintenance, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    _check_summary(summary, [0, 1])
    assert summary["above_cap_units"] == 11
    assert summary["rmse_uncapped_floor"] > 0
    for run in summary["runs"]:
        assert run["units"] == 100
        assert run["rmse"] < 12.5
        assert run["rmse_uncapped"] > run["rmse"]
        assert 0 < run["above_cap_sse_share"] < 1
