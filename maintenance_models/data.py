"""Run-to-failure histories, and reading them from NASA C-MAPSS files.

A history is one unit (an engine, a bearing) observed once per cycle: the operating
settings it ran at and its sensor readings. ``Runs`` holds many histories in one set of
arrays sorted by unit and cycle, which is what the feature code works on. C-MAPSS files
are whitespace-separated text, 26 numbers per row (unit, cycle, three settings,
21 sensors), with trailing spaces; the RUL file has one number per test unit, in unit order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from maintenance_models.errors import DatasetError

__all__ = ["CMAPSS_COLUMNS", "CmapssSubset", "Runs", "load_subset", "read_rul", "read_runs"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

CMAPSS_COLUMNS: Final = 26
_SETTINGS: Final = 3
_SUBSET_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Runs:
    """Histories of many units, rows sorted by (unit, cycle)."""

    unit: IntArray
    cycle: FloatArray
    settings: FloatArray  # (rows, settings); may have zero columns
    sensors: FloatArray  # (rows, sensors)
    sensor_names: tuple[str, ...]

    def __post_init__(self) -> None:
        rows = len(self.unit)
        if not (len(self.cycle) == len(self.settings) == len(self.sensors) == rows):
            raise ValueError("unit, cycle, settings and sensors must have the same number of rows")
        if self.sensors.shape[1] != len(self.sensor_names):
            raise ValueError("one sensor name per sensor column")
        order = np.lexsort((self.cycle, self.unit))
        if rows and not np.array_equal(order, np.arange(rows)):
            raise ValueError("rows must be sorted by unit, then cycle")

    @classmethod
    def from_histories(
        cls, histories: Sequence[npt.ArrayLike], sensor_names: Sequence[str], *, settings: int = 0
    ) -> Runs:
        """Runs from one (cycles, settings + sensors) array per unit; cycles count from 1."""
        parts = [np.asarray(h, dtype=np.float64) for h in histories]
        width = settings + len(sensor_names)
        for i, part in enumerate(parts):
            if part.ndim != 2 or part.shape[1] != width or len(part) == 0:
                raise ValueError(f"history {i}: expected a non-empty (cycles, {width}) array, got {part.shape}")
        if not parts:
            raise ValueError("no histories")
        data = np.vstack(parts)
        unit = np.concatenate([np.full(len(p), i + 1, dtype=np.int64) for i, p in enumerate(parts)])
        cycle = np.concatenate([np.arange(1, len(p) + 1, dtype=np.float64) for p in parts])
        return cls(unit, cycle, data[:, :settings], data[:, settings:], tuple(sensor_names))

    @property
    def units(self) -> IntArray:
        """The unit numbers, ascending."""
        return np.unique(self.unit)

    def bounds(self) -> list[tuple[int, int]]:
        """(start, stop) row slices of each unit, in unit order."""
        if len(self.unit) == 0:
            return []
        edges = np.flatnonzero(np.diff(self.unit)) + 1
        starts = np.concatenate([[0], edges])
        stops = np.concatenate([edges, [len(self.unit)]])
        return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]

    def last_rows(self) -> IntArray:
        """Index of the last row of each unit, in unit order."""
        return np.array([stop - 1 for _, stop in self.bounds()], dtype=np.int64)

    def remaining(self) -> FloatArray:
        """Cycles left until the last one of each unit's history: the RUL of a run to failure."""
        out = np.empty(len(self.unit))
        for start, stop in self.bounds():
            out[start:stop] = self.cycle[stop - 1] - self.cycle[start:stop]
        return out


@dataclass(frozen=True)
class CmapssSubset:
    name: str
    train: Runs
    test: Runs | None
    rul: FloatArray | None  # true RUL at the last test cycle, per test unit in unit order


def _parse_numbers(path: Path, columns: int | None) -> FloatArray:
    """Rows of numbers; every row must have ``columns`` of them (when given)."""
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    rows: list[list[float]] = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if columns is not None and len(fields) != columns:
            raise DatasetError(f"{path}, line {number}: expected {columns} numbers, found {len(fields)}")
        try:
            rows.append([float(f) for f in fields])
        except ValueError as exc:
            raise DatasetError(f"{path}, line {number}: not a number ({exc})") from exc
    if not rows:
        raise DatasetError(f"{path}: no data rows")
    values = np.array(rows, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(values), axis=1))[0])
        raise DatasetError(f"{path}: data row {bad + 1} holds NaN or infinity")
    return values


def read_runs(path: Path) -> Runs:
    """A C-MAPSS train or test file: 26 whitespace-separated numbers per row."""
    table = _parse_numbers(path, CMAPSS_COLUMNS)
    unit, cycle = table[:, 0], table[:, 1]
    if np.any(unit != np.round(unit)) or np.any(unit < 1):
        raise DatasetError(f"{path}: unit numbers must be positive integers")
    order = np.lexsort((cycle, unit))
    table = table[order]
    unit_i = table[:, 0].astype(np.int64)
    same = unit_i[1:] == unit_i[:-1]
    if np.any(same & (table[1:, 1] == table[:-1, 1])):
        raise DatasetError(f"{path}: a unit has the same cycle twice")
    names = tuple(f"s{i}" for i in range(1, CMAPSS_COLUMNS - 2 - _SETTINGS + 1))
    return Runs(unit_i, table[:, 1].copy(), table[:, 2 : 2 + _SETTINGS].copy(), table[:, 5:].copy(), names)


def read_rul(path: Path) -> FloatArray:
    """A C-MAPSS RUL file: one non-negative number per line."""
    values = _parse_numbers(path, 1)[:, 0]
    if np.any(values < 0):
        raise DatasetError(f"{path}: remaining useful life cannot be negative")
    return values


def load_subset(folder: Path, subset: str, *, with_test: bool = True) -> CmapssSubset:
    """``train_<subset>.txt`` and, when asked, ``test_<subset>.txt`` with ``RUL_<subset>.txt``."""
    if not _SUBSET_RE.match(subset):
        raise DatasetError(f"subset name {subset!r}: use letters, digits, '_' or '-' (e.g. FD001)")
    train_path = folder / f"train_{subset}.txt"
    if not train_path.is_file():
        raise DatasetError(f"{train_path}: no such file")
    train = read_runs(train_path)
    if not with_test:
        return CmapssSubset(subset, train, None, None)
    test = read_runs(folder / f"test_{subset}.txt")
    rul = read_rul(folder / f"RUL_{subset}.txt")
    units = test.units
    if len(units) != len(rul) or not np.array_equal(units, np.arange(1, len(rul) + 1)):
        raise DatasetError(
            f"{folder / f'RUL_{subset}.txt'}: {len(rul)} values, but the test file has units"
            f" {int(units[0])}..{int(units[-1])} ({len(units)} units); expected one value per unit 1..N"
        )
    return CmapssSubset(subset, train, test, rul)
