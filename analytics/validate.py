"""Choosing the detector's settings by validation on files the choice never saw.

``factory analytics validate --skab DIR`` takes every candidate in ``GRID`` and scores it,
with SKAB's protocol (first 400 rows train, the rest test), on two kinds of series:

- every labelled file under the folder (``valve1/*.csv`` in our copy), grouped by folder;
- series cut from the unlabelled, all-normal ``anomaly-free.csv``: consecutive chunks of
  400 training and ``test_rows`` test rows (group ``anomaly-free``), and the same chunks
  with the test part of the *neighbouring* chunk after the training part (group
  ``anomaly-free-shifted``): the level a file starts at is not the level of the window the
  model learned, as between two SKAB files. Every flagged point there is a false alarm.

The series are dealt into ``folds`` folds (labelled files by their number, the healthy
chunks in neighbouring pairs, so a shifted series never shares rows with another fold).
For each fold the selection rule picks one candidate looking only at the other folds; the
fold's series are then scored with it. The rule: among candidates whose pooled MAR on the
labelled files is at most ``max_mar``, the lowest false-alarm rate of the *worst* group
(so a setting has to hold on the shifted healthy series too, not only on average); ties
go to the lower MAR. The figures of each fold are held out; the same rule applied to all
folds at once gives the settings that become ``DetectorConfig``'s defaults.

The changepoint detector's settings (``CHANGE_GRID``) are chosen after the point
settings, on the same folds: with the fold's chosen point settings, the candidate with the
highest NAB standard score over every series of the other folds pooled (on a healthy
series every changepoint is a false positive); ties go to fewer false positives. They move
the point predictions only through ``backdate`` (where an episode's rows begin), so the
point rule sees each candidate with the default changepoint settings, and the held-out
figures are scored with the fold's whole choice.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from analytics.detector import DetectorConfig
from analytics.errors import DatasetError
from analytics.metrics import Confusion, NabTally
from analytics.plantcheck import PlantCheck, PlantRuns, check
from analytics.skab import TRAIN_ROWS, FileResult, SkabFile, evaluate_file, find_files, read_file

__all__ = [
    "CHANGE_GRID", "GRID", "Selection", "Series", "ValidationReport", "as_dict", "as_text", "candidates", "load_series",
    "validate",
]  # fmt: skip

# The candidates: the product of these values (every other setting at its default).
GRID: Final[Mapping[str, Sequence[float | int]]] = {
    "level_floor": (0.0, 0.005, 0.01, 0.02),
    "calibration": (0.0, 0.25),
    "threshold_factor": (0.75, 1.0, 1.25, 1.5, 2.0, 3.0),
    "smoothing": (10, 20, 30),
    "open_after": (3, 10),
    "backdate": (False, True),
}
# The changepoint detector's candidates, chosen after the point settings.
CHANGE_GRID: Final[Mapping[str, Sequence[float | int]]] = {
    "change_window": (5, 10, 15, 20, 30),
    "change_factor": (1.0, 1.5, 2.0, 3.0),
}
HEALTHY: Final = "anomaly-free"
SHIFTED: Final = "anomaly-free-shifted"


@dataclass(frozen=True, slots=True)
class Series:
    data: SkabFile
    group: str
    fold: int


def _number(name: str) -> tuple[int, str]:
    digits = re.findall(r"\d+", name)
    return (int(digits[-1]) if digits else -1, name)


def _healthy(data: SkabFile, test_rows: int, folds: int) -> list[Series]:
    """Chunks of an all-normal file as series, and each with its neighbour's test part."""
    length = TRAIN_ROWS + test_rows
    chunks = [data.values[k * length : (k + 1) * length] for k in range(len(data.times) // length)]
    stem = data.name.rsplit(".", 1)[0]
    out: list[Series] = []
    for k, rows in enumerate(chunks):
        partner = k ^ 1  # pairs (0, 1), (2, 3), ...: a pair is one fold
        fold = (k // 2) % folds
        out.append(Series(_normal(f"{stem}[{k}]", rows, data.columns), HEALTHY, fold))
        if partner < len(chunks):
            shifted = np.vstack([rows[:TRAIN_ROWS], chunks[partner][TRAIN_ROWS:]])
            out.append(Series(_normal(f"{stem}[{k}>{partner}]", shifted, data.columns), SHIFTED, fold))
    return out


def _normal(name: str, rows: np.ndarray[Any, np.dtype[np.float64]], columns: tuple[str, ...]) -> SkabFile:
    zeros = np.zeros(rows.shape[0], dtype=np.int8)
    return SkabFile(name, np.arange(rows.shape[0], dtype=np.float64), columns, rows, zeros, zeros.copy())


def load_series(folder: Path, folds: int, test_rows: int = 750) -> list[Series]:
    """Every file under ``folder``: labelled ones as they are, unlabelled ones cut into series."""
    labelled: list[SkabFile] = []
    out: list[Series] = []
    for path in find_files(folder):
        name = path.relative_to(folder).as_posix()
        data = read_file(path, name)
        if data is not None:
            labelled.append(data)
            continue
        healthy = read_file(path, name, healthy=True)
        if healthy is not None:  # always, with healthy=True
            out += _healthy(healthy, test_rows, folds)
    labelled.sort(key=lambda d: (d.name.rsplit("/", 1)[0], _number(d.name)))
    for i, data in enumerate(labelled):
        out.append(Series(data, data.name.rsplit("/", 1)[0] if "/" in data.name else ".", i % folds))
    if not labelled:
        raise DatasetError(f"{folder}: no labelled SKAB files to validate on")
    return out


def candidates(grid: Mapping[str, Sequence[float | int]] = GRID) -> list[DetectorConfig]:
    keys = list(grid)
    return [DetectorConfig(**dict(zip(keys, values, strict=True))) for values in itertools.product(*grid.values())]


@dataclass(slots=True)
class GroupFigures:
    confusion: Confusion = field(default_factory=Confusion)
    nab: NabTally = field(default_factory=NabTally)
    series: int = 0

    def add(self, result: FileResult) -> None:
        self.confusion = self.confusion + result.confusion
        self.nab.add(result.nab)
        self.series += 1

    def as_dict(self) -> dict[str, Any]:
        c, nab = self.confusion, self.nab
        out: dict[str, Any] = {"series": self.series, "f1": round(c.f1, 4), "far": round(c.far, 2),
                               "mar": round(c.mar, 2), "confusion": {"tp": c.tp, "tn": c.tn, "fp": c.fp, "fn": c.fn},
                               "changepoint_false_positives": nab.false_positives}  # fmt: skip
        if nab.true_changepoints:
            out["nab"] = {name: round(value, 2) for name, value in nab.normalised().items()}
            out["changepoints"], out["changepoints_missed"] = nab.true_changepoints, nab.missed
            out["changepoint_false_negatives"] = nab.missed
        return out


def _groups(results: Sequence[FileResult], series: Sequence[Series], chosen: Sequence[int]) -> dict[str, GroupFigures]:
    out: dict[str, GroupFigures] = {}
    for i in chosen:
        out.setdefault(series[i].group, GroupFigures()).add(results[i])
    return dict(sorted(out.items()))


@dataclass(frozen=True, slots=True)
class Selection:
    candidate: int
    met_mar: bool
    worst_far: float
    mar: float


def select(table: Sequence[Sequence[FileResult]], series: Sequence[Series], use: Sequence[int],
           max_mar: float, allowed: Sequence[bool]) -> Selection:  # fmt: skip
    """The rule: among ``allowed`` candidates (the plant gate), MAR on the labelled groups at
    most ``max_mar``, then the lowest worst-group FAR."""
    best: tuple[tuple[float, ...], Selection] | None = None
    for n, results in enumerate(table):
        if not allowed[n] and any(allowed):
            continue
        groups = _groups(results, series, use)
        anomalous = Confusion()
        for figures in groups.values():
            anomalous = anomalous + figures.confusion
        worst = max(g.confusion.far for g in groups.values())
        met = anomalous.mar <= max_mar
        key = (0.0, worst, anomalous.mar) if met else (1.0, anomalous.mar, worst)
        if best is None or key < best[0]:
            best = (key, Selection(n, met, worst, anomalous.mar))
    assert best is not None
    return best[1]


def change_candidates(config: DetectorConfig, grid: Mapping[str, Sequence[float | int]]) -> list[DetectorConfig]:
    keys = list(grid)
    return [
        config.model_copy(update=dict(zip(keys, values, strict=True))) for values in itertools.product(*grid.values())
    ]


def select_change(table: Sequence[Sequence[FileResult]], use: Sequence[int]) -> int:
    """The changepoint candidate with the highest pooled NAB standard score over ``use``, then fewer FP."""
    best: tuple[tuple[float, int], int] | None = None
    for n, results in enumerate(table):
        tally = NabTally()
        for i in use:
            tally.add(results[i].nab)
        key = (-tally.normalised()["standard"], tally.false_positives)
        if best is None or key < best[0]:
            best = (key, n)
    assert best is not None
    return best[1]


@dataclass(slots=True)
class ValidationReport:
    configs: list[DetectorConfig]
    series: list[Series]
    folds: int
    max_mar: float
    final: Selection  # the rule on every fold at once: the defaults
    final_in_sample: dict[str, GroupFigures]
    plant: list[PlantCheck]  # per candidate; empty: no plant gate
    chosen: list[Selection] = field(default_factory=list)  # one per fold
    held_out: list[dict[str, GroupFigures]] = field(default_factory=list)  # one per fold
    pooled: dict[str, GroupFigures] = field(default_factory=dict)  # every series, scored by its fold's choice
    per_series: dict[str, FileResult] = field(default_factory=dict)  # each series, scored by its fold's choice
    change_grid: Mapping[str, Sequence[float | int]] = field(default_factory=lambda: CHANGE_GRID)
    final_change: DetectorConfig | None = None  # the defaults, changepoint settings included
    chosen_change: list[DetectorConfig] = field(default_factory=list)  # one per fold

    def settings(self, n: int, fold: int | None = None) -> dict[str, Any]:
        """Candidate ``n``'s point settings, and the changepoint settings chosen with it (on
        every fold, or on ``fold``'s others)."""
        config = self.configs[n]
        change = self.final_change if fold is None else self.chosen_change[fold] if self.chosen_change else None
        out = {key: getattr(config, key) for key in GRID}
        if change is not None:
            out |= {key: getattr(change, key) for key in self.change_grid}
        return out

    def spread(self) -> dict[str, dict[str, dict[str, float]]]:
        """Mean, sample standard deviation, min and max over folds, per group and rate (and
        NAB standard score, where the group has changepoints)."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for group in self.pooled:
            per = [fold[group].confusion for fold in self.held_out if group in fold]
            rates = {"far": [c.far for c in per], "mar": [c.mar for c in per], "f1": [c.f1 for c in per]}
            if not any(c.tp + c.fn for c in per):
                rates = {"far": rates["far"]}
            nab = [fold[group].nab for fold in self.held_out if group in fold and fold[group].nab.true_changepoints]
            if nab:
                rates["nab_standard"] = [t.normalised()["standard"] for t in nab]
            out[group] = {name: _stats(values) for name, values in rates.items()}
        return out


def _stats(values: Sequence[float]) -> dict[str, float]:
    sd = statistics.stdev(values) if len(values) > 1 else math.nan
    return {"mean": round(statistics.fmean(values), 3), "sd": round(sd, 3),
            "min": round(min(values), 3), "max": round(max(values), 3)}  # fmt: skip


def validate(
    series: Sequence[Series], configs: Sequence[DetectorConfig], *, folds: int, max_mar: float = 25.0,
    plant: PlantRuns | None = None, progress: Callable[[int], None] | None = None,
    change_grid: Mapping[str, Sequence[float | int]] = CHANGE_GRID,
) -> ValidationReport:  # fmt: skip
    """Score every candidate on every series once (and on the plant), then choose per fold and
    overall; then the changepoint settings with each chosen point candidate."""
    table: list[list[FileResult]] = []
    checks: list[PlantCheck] = []
    for config in configs:
        table.append([evaluate_file(s.data, config) for s in series])
        if plant is not None:
            checks.append(check(plant, config))
        if progress is not None:
            progress(1)
    allowed = [c.passed for c in checks] if checks else [True] * len(configs)
    everything = range(len(series))
    final = select(table, series, everything, max_mar, allowed)
    splits = [([i for i, s in enumerate(series) if s.fold != f], [i for i, s in enumerate(series) if s.fold == f])
              for f in range(folds)]  # fmt: skip
    choices = [select(table, series, train, max_mar, allowed) for train, _ in splits]
    changes: dict[int, tuple[list[DetectorConfig], list[list[FileResult]]]] = {}
    for n in sorted({final.candidate, *(c.candidate for c in choices)}):
        variants = change_candidates(configs[n], change_grid)
        changes[n] = (variants, [[evaluate_file(s.data, v) for s in series] for v in variants])
    variants, results = changes[final.candidate]
    best = select_change(results, everything)
    report = ValidationReport(list(configs), list(series), folds, max_mar, final,
                              _groups(results[best], series, everything), checks, change_grid=change_grid,
                              final_change=variants[best])  # fmt: skip
    for choice, (train, test) in zip(choices, splits, strict=True):
        variants, results = changes[choice.candidate]
        best = select_change(results, train)
        report.chosen.append(choice)
        report.chosen_change.append(variants[best])
        report.held_out.append(_groups(results[best], series, test))
        report.per_series.update({series[i].data.name: results[best][i] for i in test})
        for group, figures in report.held_out[-1].items():
            pooled = report.pooled.setdefault(group, GroupFigures())
            pooled.confusion = pooled.confusion + figures.confusion
            pooled.nab.add(figures.nab)
            pooled.series += figures.series
    report.pooled = dict(sorted(report.pooled.items()))
    return report


def as_dict(report: ValidationReport) -> dict[str, Any]:
    """The JSON object ``factory analytics validate --json`` prints."""
    return {
        "protocol": f"{report.folds} folds by file; per fold the settings are chosen on the other folds: labelled "
        f"MAR <= {report.max_mar:g} %, then the lowest false-alarm rate of the worst group",
        "grid": {key: list(values) for key, values in GRID.items()},
        "change_grid": {key: list(values) for key, values in report.change_grid.items()},
        "change_protocol": "with each fold's point settings, the changepoint settings of the highest NAB standard "
        "score over every series of the other folds (a healthy series' changepoints are false positives)",
        "candidates": len(report.configs),
        "series": {group: sum(1 for s in report.series if s.group == group) for group in report.pooled},
        "folds": [_fold(report, n) for n in range(report.folds)],
        "held_out": {group: figures.as_dict() for group, figures in report.pooled.items()},
        "spread": report.spread(),
        "chosen": report.settings(report.final.candidate),
        "chosen_in_sample": {group: figures.as_dict() for group, figures in report.final_in_sample.items()},
        "plant": _plant(report),
    }


def _fold(report: ValidationReport, n: int) -> dict[str, Any]:
    choice = report.chosen[n]
    return {"fold": n, "settings": report.settings(choice.candidate, n), "train_worst_far": round(choice.worst_far, 2),
            "train_mar": round(choice.mar, 2), "train_met_mar": choice.met_mar,
            "held_out": {group: figures.as_dict() for group, figures in report.held_out[n].items()},
            "files": [s.data.name for s in report.series if s.fold == n],
            "per_series": [_series(s.data.name, report.per_series[s.data.name])
                           for s in report.series if s.fold == n]}  # fmt: skip


def _series(name: str, result: FileResult) -> dict[str, Any]:
    c = result.confusion
    out: dict[str, Any] = {"series": name, "far": round(c.far, 2), "fp_changepoints": result.nab.false_positives}
    if result.nab.true_changepoints:
        out["nab_standard"] = round(result.nab.normalised()["standard"], 2)
    if c.tp + c.fn:
        out |= {"f1": round(c.f1, 4), "mar": round(c.mar, 2), "fn_changepoints": result.nab.missed}
    return out


def _plant(report: ValidationReport) -> dict[str, Any] | None:
    if not report.plant:
        return None
    chosen = report.plant[report.final.candidate]
    return {"candidates_passing": sum(c.passed for c in report.plant),
            "chosen_false_alarm_points": chosen.false_alarm_points, "chosen_healthy_points": chosen.healthy_points,
            "chosen_fault_delays_s": list(chosen.fault_delays_s),
            "chosen_wear_flagged": chosen.wear_flagged}  # fmt: skip


def _settings(settings: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else format(v, 'g')}" for k, v in settings.items())


def as_text(report: ValidationReport) -> str:
    head = (f"{'':<34} {'F1':>6} {'FAR %':>7} {'MAR %':>7} {'NAB std':>8} {'low FP':>7} {'low FN':>7} "
            f"{'FP cp':>6} {'FN cp':>6}")  # fmt: skip

    def line(label: str, g: GroupFigures) -> str:
        c, nab = g.confusion, g.nab
        f1_mar = f"{c.f1:6.3f} {c.far:7.2f} {c.mar:7.2f}" if c.tp + c.fn else f"{'-':>6} {c.far:7.2f} {'-':>7}"
        scores = nab.normalised()
        profiles = (f"{scores['standard']:8.2f} {scores['low_fp']:7.2f} {scores['low_fn']:7.2f}"
                    if nab.true_changepoints else f"{'-':>8} {'-':>7} {'-':>7}")  # fmt: skip
        missed = f"{nab.missed:6d}" if nab.true_changepoints else f"{'-':>6}"
        return f"{label:<34} {f1_mar} {profiles} {nab.false_positives:6d} {missed}"

    out = [f"{len(report.configs)} candidates, {report.folds} folds; rule: MAR <= {report.max_mar:g} % on the labelled "
           "files of the other folds, then the lowest worst-group FAR"]  # fmt: skip
    plant = _plant(report)
    if plant is not None:
        out.append(f"simulated plant gate (no alarm in healthy hours, faults within a minute, the wear caught): "
                   f"{plant['candidates_passing']} of {len(report.configs)} candidates pass")  # fmt: skip
    for n, (choice, held) in enumerate(zip(report.chosen, report.held_out, strict=True)):
        settings = _settings(report.settings(choice.candidate, n))
        out += ["", f"fold {n}: chose {settings}", head]
        out += [line(f"  {group} (held out)", g) for group, g in held.items()]
    out += ["", "every series, scored by the settings chosen without it:", head]
    out += [line(f"  {group}", g) for group, g in report.pooled.items()]
    out += ["", "over folds (mean / sd / min / max):"]
    for group, rates in report.spread().items():
        for rate, s in rates.items():
            out.append(f"  {group:<22} {rate:<12} {s['mean']:8.3f} {s['sd']:8.3f} {s['min']:8.3f} {s['max']:8.3f}")
    settings = _settings(report.settings(report.final.candidate))
    out += ["", f"chosen on every fold (the defaults): {settings}", head]
    out += [line(f"  {group} (in-sample)", g) for group, g in report.final_in_sample.items()]
    if plant is not None:
        flagged, healthy = plant["chosen_false_alarm_points"], plant["chosen_healthy_points"]
        wear = plant["chosen_wear_flagged"]
        out.append(f"  simulated plant: {flagged} of {healthy} healthy points flagged; "
                   f"faults flagged after {plant['chosen_fault_delays_s']} s"
                   + ("" if wear is None else f"; the wear's last half hour {100 * wear:.0f} % flagged"))  # fmt: skip
    return "\n".join(out)
