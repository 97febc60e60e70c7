"""Turning a SKAB evaluation into the JSON object and the table the CLI prints."""

from __future__ import annotations

from typing import Any, Final

from analytics.detector import DetectorConfig
from analytics.skab import NAB_WINDOW_S, TRAIN_ROWS, FileResult, SkabReport

__all__ = ["LEADERBOARD", "as_dict", "as_text"]

# SKAB's strict leaderboard (test parts only, 30 s NAB window to the right), outlier detection:
# (algorithm, F1, FAR %, MAR %). From the README of github.com/waico/SKAB.
LEADERBOARD: Final = (
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T-squared+Q (PCA)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("T-squared", 0.66, 19.21, 42.60),
    ("Isolation forest", 0.29, 2.56, 82.89),
)


def as_dict(report: SkabReport, config: DetectorConfig) -> dict[str, Any]:
    total, nab = report.confusion, report.nab
    return {
        "f1": round(total.f1, 4),
        "far": round(total.far, 2),
        "mar": round(total.mar, 2),
        "rates_unit": "percent",
        "files": len(report.files),
        "skipped": report.skipped,
        "test_points": total.tp + total.tn + total.fp + total.fn,
        "anomalous_points": total.tp + total.fn,
        "confusion": {"tp": total.tp, "tn": total.tn, "fp": total.fp, "fn": total.fn},
        "nab": {name: round(value, 2) for name, value in nab.normalised().items()},
        "nab_window_s": NAB_WINDOW_S,
        "changepoints": nab.true_changepoints,
        "changepoints_detected": nab.true_changepoints - nab.missed,
        "changepoints_missed": nab.missed,
        "changepoint_false_negatives": nab.missed,
        "changepoint_false_positives": nab.false_positives,
        "protocol": f"SKAB strict: per file, first {TRAIN_ROWS} rows train, the rest test; point metrics pooled",
        "config": config.model_dump(),
        "per_file": [_file(r) for r in report.files],
    }


def _file(result: FileResult) -> dict[str, Any]:
    c = result.confusion
    return {"file": result.name, "f1": round(c.f1, 4), "far": round(c.far, 2), "mar": round(c.mar, 2),
            "test_points": result.test_rows, "changepoints": result.nab.true_changepoints,
            "changepoint_false_negatives": result.nab.missed,
            "changepoint_false_positives": result.nab.false_positives}  # fmt: skip


def as_text(report: SkabReport) -> str:
    total, nab = report.confusion, report.nab.normalised()
    lines = [f"{'file':<28} {'F1':>6} {'FAR %':>7} {'MAR %':>7}"]
    lines += [f"{r.name:<28} {r.confusion.f1:6.3f} {r.confusion.far:7.2f} {r.confusion.mar:7.2f}" for r in report.files]
    lines.append(f"{'all files (pooled)':<28} {total.f1:6.3f} {total.far:7.2f} {total.mar:7.2f}")
    tally = report.nab
    lines.append(
        f"NAB ({NAB_WINDOW_S:g} s window): standard {nab['standard']:.2f}, low FP {nab['low_fp']:.2f},"
        f" low FN {nab['low_fn']:.2f}; changepoints {tally.true_changepoints}: {tally.missed} missed (FN),"
        f" {tally.false_positives} false positives"
    )
    if report.skipped:
        lines.append(f"not test files (no labels): {', '.join(report.skipped)}")
    lines.append("")
    lines.append("SKAB strict leaderboard (all 34 files):")
    for name, f1, far, mar in LEADERBOARD:
        beats = total.f1 >= f1 and total.far <= far and total.mar <= mar
        lines.append(f"  {name:<26} {f1:6.2f} {far:7.2f} {mar:7.2f}{'   beaten on all three' if beats else ''}")
    return "\n".join(lines)
