"""SKAB's evaluation metrics, reimplemented in numpy so the figures compare with its leaderboard.

Point metrics (outlier detection) follow SKAB's ``chp_score(metric="binary")``: the
confusion counts are pooled over every file before the rates are taken, with
F1 = TP / (TP + (FN + FP) / 2), FAR = FP / (FP + TN) and MAR = FN / (FN + TP), the
rates as percentages.

The changepoint score follows SKAB's ``chp_score(metric="nab")`` as its strict
leaderboard calls it: a detection window of ``window_s`` seconds to the right of each
true changepoint (``anomaly_window_destination="righter"``, ``"cut right window"`` when
windows overlap), the first predicted changepoint inside a window scored on SKAB's
"improved" tanh scale, every prediction outside all windows a false positive, every
empty window a miss; the three NAB profiles (standard, low FP, low FN) are summed over
files and normalised between the null and the perfect detector (0 and 100).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "NAB_PROFILES",
    "Confusion",
    "NabTally",
    "changepoints_of",
    "confusion",
    "nab_tally",
]

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

# profile: (A_tp, A_fp, A_fn), as in SKAB's table_of_coef
NAB_PROFILES: Final = {
    "standard": (1.0, -0.11, -1.0),
    "low_fp": (1.0, -0.22, -1.0),
    "low_fn": (1.0, -0.11, -2.0),
}
_DETAIL: Final = 1000  # SKAB's `detalization` of the scoring curve


@dataclass(frozen=True, slots=True)
class Confusion:
    tp: int = 0
    tn: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.tp + other.tp, self.tn + other.tn, self.fp + other.fp, self.fn + other.fn)

    @property
    def f1(self) -> float:
        denominator = self.tp + (self.fn + self.fp) / 2
        return self.tp / denominator if denominator else 0.0

    @property
    def far(self) -> float:
        """False alarm rate, percent of the normal points flagged."""
        return 100.0 * self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    @property
    def mar(self) -> float:
        """Missed alarm rate, percent of the anomalous points not flagged."""
        return 100.0 * self.fn / (self.fn + self.tp) if self.fn + self.tp else 0.0


def confusion(true: npt.ArrayLike, predicted: npt.ArrayLike) -> Confusion:
    t = np.asarray(true) == 1
    p = np.asarray(predicted) == 1
    return Confusion(
        tp=int(np.count_nonzero(t & p)),
        tn=int(np.count_nonzero(~t & ~p)),
        fp=int(np.count_nonzero(~t & p)),
        fn=int(np.count_nonzero(t & ~p)),
    )


def changepoints_of(predicted: npt.ArrayLike) -> BoolArray:
    """SKAB's predicted changepoints: where the label flips, and the first point if it is set."""
    p = np.asarray(predicted).astype(bool)
    out = np.zeros(p.shape, dtype=bool)
    if p.size:
        out[0] = p[0]
        out[1:] = p[1:] != p[:-1]
    return out


def _windows(true_times: FloatArray, width_s: float) -> list[list[float]]:
    """Right-side windows; an overlapping next window starts where the previous one ends."""
    bounds = [[float(t), float(t) + width_s] for t in true_times]
    for i in range(len(bounds) - 1):
        bounds[i + 1][0] = max(bounds[i + 1][0], bounds[i][1])
    return bounds


def _scale(position: float, a_tp: float, a_fp: float) -> float:
    """SKAB's "improved" NAB scale: A_tp at the window's start falling to A_fp at its end."""
    event = min(int(position * _DETAIL), _DETAIL - 1)
    x = -math.pi / 2 + math.pi * event / (_DETAIL - 1)
    half = (a_tp - a_fp) / 2
    return half * -math.tanh(x) / math.tanh(math.pi / 2) + half + a_fp


@dataclass(slots=True)
class NabTally:
    """Raw NAB sums (score, null, perfect per profile), added up over files before normalising."""

    score: dict[str, float] = field(default_factory=lambda: dict.fromkeys(NAB_PROFILES, 0.0))
    null: dict[str, float] = field(default_factory=lambda: dict.fromkeys(NAB_PROFILES, 0.0))
    perfect: dict[str, float] = field(default_factory=lambda: dict.fromkeys(NAB_PROFILES, 0.0))
    true_changepoints: int = 0
    missed: int = 0
    false_positives: int = 0

    def add(self, other: NabTally) -> None:
        for name in NAB_PROFILES:
            self.score[name] += other.score[name]
            self.null[name] += other.null[name]
            self.perfect[name] += other.perfect[name]
        self.true_changepoints += other.true_changepoints
        self.missed += other.missed
        self.false_positives += other.false_positives

    def normalised(self) -> dict[str, float]:
        """100 for the perfect detector, 0 for the one that never fires."""
        out: dict[str, float] = {}
        for name in NAB_PROFILES:
            span = self.perfect[name] - self.null[name]
            out[name] = 100.0 * (self.score[name] - self.null[name]) / span if span else 0.0
        return out


def nab_tally(times: FloatArray, true_cp: npt.ArrayLike, predicted_cp: npt.ArrayLike, window_s: float) -> NabTally:
    """One file's NAB sums; ``times`` are seconds, sorted ascending."""
    windows = _windows(times[np.asarray(true_cp) == 1], window_s)
    hits = times[np.asarray(predicted_cp) == 1]
    tally = NabTally(true_changepoints=len(windows))
    first_hits: list[float | None] = []
    if windows:
        outside = int(np.count_nonzero(hits < windows[0][0])) + int(np.count_nonzero(hits > windows[-1][1]))
        for (_, end), (start, _) in itertools.pairwise(windows):
            outside += int(np.count_nonzero((hits > end) & (hits < start)))
        for start, end in windows:
            inside = hits[(hits >= start) & (hits <= end)]
            first_hits.append((float(inside[0]) - start) / (end - start) if inside.size else None)
    else:
        outside = int(hits.size)
    tally.false_positives = outside
    tally.missed = sum(1 for hit in first_hits if hit is None)
    for name, (a_tp, a_fp, a_fn) in NAB_PROFILES.items():
        score = a_fp * outside + a_fn * tally.missed
        score += sum(_scale(hit, a_tp, a_fp) for hit in first_hits if hit is not None)
        tally.score[name] = score
        tally.null[name] = a_fn * len(windows)
        tally.perfect[name] = a_tp * len(windows)
    return tally
