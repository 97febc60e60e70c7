"""Reading a SKAB-format folder and running SKAB's own protocol on the detector.

SKAB (Skoltech Anomaly Benchmark) files are ``;``-separated CSV with a ``datetime``
index, one column per sensor and two label columns, ``anomaly`` and ``changepoint``.
The protocol of SKAB's strict leaderboard (``notebooks-proper-eval`` in its repository):
per file, the first 400 rows train the detector and the rest are the test part
(``train_test_split(train_size=400, shuffle=False)``); predictions on every test part
are pooled for the point metrics; SKAB's scripts take their flips as the predicted
changepoints for the NAB score (30-second window to the right of each true changepoint),
we take the detector's own changepoint output (``analytics.changepoint``) instead.
Files without the label columns (SKAB's ``anomaly-free.csv``) are not test files.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from analytics.detector import Detector, DetectorConfig
from analytics.errors import DatasetError
from analytics.metrics import Confusion, NabTally, changepoints_of, confusion, nab_tally

__all__ = [
    "TRAIN_ROWS", "FileResult", "SkabFile", "SkabReport", "evaluate", "evaluate_file", "find_files", "read_file",
    "score_predictions",
]  # fmt: skip

TRAIN_ROWS: Final = 400
NAB_WINDOW_S: Final = 30.0
LABELS: Final = ("anomaly", "changepoint")


@dataclass(frozen=True, slots=True)
class SkabFile:
    name: str
    times: npt.NDArray[np.float64]  # epoch seconds (the file's naive timestamps read as UTC)
    columns: tuple[str, ...]
    values: npt.NDArray[np.float64]  # rows x columns
    anomaly: npt.NDArray[np.int8]
    changepoint: npt.NDArray[np.int8]


def _parse_time(text: str, where: str) -> float:
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError as exc:
        raise DatasetError(f"{where}: datetime {text!r}: {exc}") from exc


def read_file(path: Path, name: str | None = None, *, healthy: bool = False) -> SkabFile | None:
    """One labelled SKAB file, or None when it has no label columns (an anomaly-free file);
    with ``healthy``, an unlabelled file is read as all normal instead."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle, delimiter=";"))
    except OSError as exc:
        raise DatasetError(f"{path}: {exc}") from exc
    if not rows or rows[0][:1] != ["datetime"]:
        raise DatasetError(f"{path}: the first column must be 'datetime'")
    header = rows[0]
    labelled = all(label in header for label in LABELS)
    if not labelled and not healthy:
        return None
    label_at = [header.index(label) for label in LABELS] if labelled else []
    sensor_at = [i for i, column in enumerate(header) if i and i not in label_at]
    times = np.empty(len(rows) - 1)
    table = np.empty((len(rows) - 1, len(header)))
    for n, row in enumerate(rows[1:]):
        where = f"{path}:{n + 2}"
        if len(row) != len(header):
            raise DatasetError(f"{where}: {len(row)} fields, the header has {len(header)}")
        times[n] = _parse_time(row[0], where)
        try:
            table[n, 1:] = [float(v) for v in row[1:]]
        except ValueError as exc:
            raise DatasetError(f"{where}: {exc}") from exc
    if np.any(np.diff(times) <= 0):
        raise DatasetError(f"{path}: datetime must increase from row to row")
    normal = np.zeros(len(times), dtype=np.int8)
    return SkabFile(
        name=name or path.name,
        times=times,
        columns=tuple(header[i] for i in sensor_at),
        values=table[:, sensor_at],
        anomaly=table[:, label_at[0]].astype(np.int8) if labelled else normal,
        changepoint=table[:, label_at[1]].astype(np.int8) if labelled else normal.copy(),
    )


def find_files(folder: Path) -> list[Path]:
    """Every CSV under ``folder``, in a stable order (SKAB walks the tree the same way)."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    return sorted(folder.rglob("*.csv"), key=lambda p: p.relative_to(folder).as_posix())


@dataclass(frozen=True, slots=True)
class FileResult:
    name: str
    confusion: Confusion
    nab: NabTally
    test_rows: int


@dataclass(slots=True)
class SkabReport:
    files: list[FileResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def confusion(self) -> Confusion:
        total = Confusion()
        for result in self.files:
            total = total + result.confusion
        return total

    @property
    def nab(self) -> NabTally:
        total = NabTally()
        for result in self.files:
            total.add(result.nab)
        return total


def evaluate_file(data: SkabFile, config: DetectorConfig) -> FileResult:
    """Train on the first 400 rows, score the rest in time order, compare with the labels."""
    if len(data.times) <= TRAIN_ROWS:
        raise DatasetError(f"{data.name}: {len(data.times)} rows, the protocol needs more than {TRAIN_ROWS}")
    detector = Detector(config, data.columns).fit(data.values[:TRAIN_ROWS])
    scores = detector.stream().update(data.values[TRAIN_ROWS:])
    changes = np.zeros(scores.score.size, dtype=bool)
    changes[np.clip(np.array(scores.changes, dtype=np.int64), 0, None)] = True  # one begun in training: at row 0
    return score_predictions(data, scores.is_anomaly, changes)


def score_predictions(data: SkabFile, flags: npt.ArrayLike, changes: npt.ArrayLike | None = None) -> FileResult:
    """SKAB's metrics of one file's predictions on its test part (the rows after the first 400):
    the point metrics from ``flags``, the NAB score from ``changes`` (predicted changepoints,
    a flag per row) or, without them, from the flips of ``flags`` as SKAB's own scripts do."""
    test = slice(TRAIN_ROWS, None)
    predicted = np.asarray(flags).astype(bool)
    if predicted.shape != data.anomaly[test].shape:
        raise DatasetError(f"{data.name}: {predicted.size} predictions for {data.anomaly[test].size} test rows")
    changepoints = changepoints_of(predicted) if changes is None else np.asarray(changes).astype(bool)
    if changepoints.shape != predicted.shape:
        raise DatasetError(f"{data.name}: {changepoints.size} changepoint flags for {predicted.size} test rows")
    return FileResult(
        name=data.name,
        confusion=confusion(data.anomaly[test], predicted),
        nab=nab_tally(data.times[test], data.changepoint[test], changepoints, NAB_WINDOW_S),
        test_rows=len(predicted),
    )


def evaluate(
    folder: Path, config: DetectorConfig, paths: Iterable[Path] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SkabReport:  # fmt: skip
    """SKAB's protocol over every labelled file under ``folder``: one configuration for all."""
    report = SkabReport()
    for path in paths if paths is not None else find_files(folder):
        name = path.relative_to(folder).as_posix()
        data = read_file(path, name)
        if data is None:
            report.skipped.append(name)
        else:
            report.files.append(evaluate_file(data, config))
        if progress is not None:
            progress(name)
    if not report.files:
        raise DatasetError(f"{folder}: no labelled SKAB files (with 'anomaly' and 'changepoint' columns)")
    return report
