"""C-MAPSS-format files: parsing (trailing spaces, errors with line numbers) and the synthetic
run-to-failure fleets the other maintenance tests train on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maintenance_models.data import Runs, load_subset, read_rul, read_runs
from maintenance_models.errors import DatasetError

SENSORS = 21
# Operating conditions like FD002's six regimes (altitude, Mach, throttle angle).
REGIME_SETTINGS = np.array(
    [[0, 0, 100], [10, 0.25, 100], [20, 0.7, 100], [25, 0.62, 60], [35, 0.84, 100], [42, 0.84, 100]], dtype=float
)


def _fleet(
    rng: np.random.Generator, engine: tuple[np.ndarray, np.ndarray], units: int, regimes: int, cut: bool
) -> tuple[list[np.ndarray], list[float]]:
    """Rows of C-MAPSS-format histories from a simple wear model, and the true RUL per unit."""
    shift, gain = engine
    rows, truth = [], []
    for unit in range(1, units + 1):
        life = int(rng.integers(120, 260))
        stop = int(rng.integers(25, life - 5)) if cut else life
        offset = rng.normal(0, 0.3, SENSORS)
        t = np.arange(1, stop + 1)
        wear = np.exp(4.0 * t / life) / np.exp(4.0)  # slow at first, fast near the end
        regime = rng.integers(0, regimes, size=stop)
        settings_ = REGIME_SETTINGS[regime] + rng.normal(0, 0.002, size=(stop, 3))
        sensors = 500 + shift[regime] + offset + wear[:, None] * gain + rng.normal(0, 0.25, size=(stop, SENSORS))
        sensors[:, [0, 4, 9]] = 100.0  # constant sensors, as in FD001
        sensors[:, 5] = 21.60 + 0.01 * rng.integers(0, 2, size=stop)  # a two-valued one
        rows.append(np.column_stack([np.full(stop, unit), t, settings_, sensors]))
        truth.append(float(life - stop))
    return rows, truth


def _write_rows(path: Path, rows: list[np.ndarray]) -> None:
    with path.open("w") as handle:
        for block in rows:
            for row in block:
                handle.write(f"{int(row[0])} {int(row[1])} " + " ".join(f"{v:.4f}" for v in row[2:]) + "  \n")


def write_synthetic(folder: Path, subset: str = "FD901", *, units: int = 40, regimes: int = 1, seed: int = 0) -> Path:
    """train_/test_/RUL_<subset>.txt of a synthetic fleet, formatted like NASA's files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    shift = rng.normal(0, 40, size=(len(REGIME_SETTINGS), SENSORS))  # regimes move sensors a lot
    gain = np.zeros(SENSORS)
    gain[[1, 2, 3, 6, 10, 13]] = rng.uniform(2, 6, size=6) * rng.choice([-1, 1], size=6)
    train, _ = _fleet(rng, (shift, gain), units, regimes, cut=False)
    test, truth = _fleet(rng, (shift, gain), units // 2, regimes, cut=True)
    _write_rows(folder / f"train_{subset}.txt", train)
    _write_rows(folder / f"test_{subset}.txt", test)
    (folder / f"RUL_{subset}.txt").write_text("".join(f"{int(r)}\n" for r in truth))
    return folder


def test_reads_files_with_trailing_spaces_in_unit_and_cycle_order(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    line = " ".join(["0.5"] * 24)
    path.write_text(f"2 1 {line}  \n1 2 {line} \n1 1 {line}   \n\n")
    runs = read_runs(path)
    assert runs.unit.tolist() == [1, 1, 2]
    assert runs.cycle.tolist() == [1.0, 2.0, 1.0]
    assert runs.settings.shape == (3, 3)
    assert runs.sensors.shape == (3, 21)
    assert runs.sensor_names[0] == "s1"
    assert runs.sensor_names[-1] == "s21"
    assert runs.remaining().tolist() == [1.0, 0.0, 0.0]
    assert runs.last_rows().tolist() == [1, 2]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "1 1 " + " ".join(["1"] * 24) + "\n1 2 " + " ".join(["1"] * 23) + " \n",
            "line 2: expected 26 numbers, found 25",
        ),
        ("1 1 " + " ".join(["1"] * 23) + " x\n", "line 1: not a number"),
        ("1 1 " + " ".join(["1"] * 23) + " nan\n", "NaN or infinity"),
        ("0 1 " + " ".join(["1"] * 24) + "\n", "unit numbers must be positive integers"),
        ("1 1 " + " ".join(["1"] * 24) + "\n1 1 " + " ".join(["2"] * 24) + "\n", "same cycle twice"),
        ("\n  \n", "no data rows"),
    ],
)
def test_bad_files_are_refused_with_the_line_and_reason(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "train_X.txt"
    path.write_text(body)
    with pytest.raises(DatasetError, match=message) as info:
        read_runs(path)
    assert str(path) in str(info.value)


def test_rul_file_must_match_the_test_units(tmp_path: Path) -> None:
    write_synthetic(tmp_path, "FD900", units=6)
    assert len(read_rul(tmp_path / "RUL_FD900.txt")) == 3
    (tmp_path / "RUL_FD900.txt").write_text("10\n20\n")
    with pytest.raises(DatasetError, match=r"2 values, but the test file has units 1\.\.3"):
        load_subset(tmp_path, "FD900")
    (tmp_path / "RUL_FD900.txt").write_text("10\n-1\n5\n")
    with pytest.raises(DatasetError, match="cannot be negative"):
        load_subset(tmp_path, "FD900")


def test_subset_names_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="subset name"):
        load_subset(tmp_path, "../etc")
    with pytest.raises(DatasetError, match=r"train_FD001\.txt: no such file"):
        load_subset(tmp_path, "FD001")
    write_synthetic(tmp_path, "FD902", units=4)
    (tmp_path / "test_FD902.txt").unlink()
    assert load_subset(tmp_path, "FD902", with_test=False).test is None
    with pytest.raises(DatasetError, match=r"test_FD902\.txt: cannot read"):
        load_subset(tmp_path, "FD902")


def test_synthetic_files_load_like_nasa_ones(tmp_path: Path) -> None:
    data = load_subset(write_synthetic(tmp_path, units=10, regimes=6), "FD901")
    assert len(data.train.units) == 10
    assert data.test is not None
    assert data.rul is not None
    assert len(data.test.units) == len(data.rul) == 5
    assert np.all(data.rul >= 5)


def test_runs_from_histories_number_units_and_cycles() -> None:
    runs = Runs.from_histories([np.ones((3, 2)), np.zeros((2, 2))], ["a", "b"])
    assert runs.unit.tolist() == [1, 1, 1, 2, 2]
    assert runs.cycle.tolist() == [1, 2, 3, 1, 2]
    assert runs.settings.shape == (5, 0)
    with pytest.raises(ValueError, match=r"expected a non-empty \(cycles, 2\) array"):
        Runs.from_histories([np.ones((3, 3))], ["a", "b"])


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(
        st.lists(st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: round(v, 4)), min_size=24, max_size=24),
        min_size=1,
        max_size=6,
    ),
    padding=st.lists(st.sampled_from([" ", "  ", "\t", " \t "]), min_size=6, max_size=6),
)
def test_whatever_the_whitespace_numbers_read_back(tmp_path_factory: pytest.TempPathFactory,
                                                   values: list[list[float]], padding: list[str]) -> None:  # fmt: skip
    path = tmp_path_factory.mktemp("prop") / "t.txt"
    lines = [f"{padding[i % 6]}1{padding[(i + 1) % 6]}{i + 1} " + padding[i % 6].join(map(repr, row)) + padding[i % 6]
             for i, row in enumerate(values)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    runs = read_runs(path)
    expected = np.array(values)
    assert np.array_equal(np.hstack([runs.settings, runs.sensors]), expected)
