"""When did a change begin? A fast changepoint detector beside the detector's episodes.

Episodes are for alarms: they open on the smoothed score, after ``open_after`` points
above the line, so they open seconds after a fault begins and say nothing of shifts
inside it. This detector works on the same standardised tags *without* smoothing: at
every row it compares the mean of the last ``window`` rows with the mean of the
``window`` rows before them,

    D_t = d' P d,   d = mean(z[t-w+1 .. t]) - mean(z[t-2w+1 .. t-w]),

with ``P`` the model's precision (widened, shrunk correlation), so a shift of one tag or
a break between correlated tags both count, and a slow drift hardly does (it moves both
means alike). A step at row s makes D rise and peak at t = s + w - 1, where the split
between the two windows falls on the step. A change is reported at each peak of D
above its line (known one row later, when D falls) that comes at least ``w`` rows after
the last one reported. Its start is then estimated (``split``) as the likeliest split
of the last ``3w`` rows: the split whose rows after it differ most from the ``w`` rows
before it, the two-sample statistic of a mean shift. Noise puts D's first peak a few
rows early on its way up; the split estimate does not depend on where that peak fell.
The estimate is made at detection time, about ``w`` rows after the change. The line is the largest D
of the healthy window times ``change_factor``: D compares means, so it does not move
when a file starts at another level than the window it was trained on.

Everything is vectorised but the walk over the peaks; a ``ChangeState`` carries the last
``3w - 1`` rows, the last D and the rows since the last report, so a stream scored in pieces finds the
same changes as scored at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = ["SPAN", "ChangeState", "Changes", "filled", "find", "split", "statistic"]

Array = npt.NDArray[np.float64]
SPAN: Final = 3  # windows of rows a change's start is looked for in, and carried between batches


def filled(rows: Array, seed: Array) -> Array:
    """Each tag's missing values hold its last value (``seed`` before the first; 0 = the mean)."""
    if not np.isnan(np.add.reduce(rows, axis=None)):
        return rows
    both = np.vstack([np.nan_to_num(seed)[np.newaxis, :], rows])
    index = np.where(np.isnan(both), 0, np.arange(both.shape[0])[:, np.newaxis])
    index = np.maximum.accumulate(index, axis=0)
    return np.take_along_axis(both, index, axis=0)[1:]


def statistic(rows: Array, precision: Array, window: int) -> Array:
    """D at every row (NaN until ``2 * window`` rows are there): the two windows' mean
    difference, squared under ``precision``."""
    n = rows.shape[0]
    out = np.full(n, np.nan)
    if n < 2 * window:
        return out
    total = np.vstack([np.zeros((1, rows.shape[1])), np.cumsum(rows, axis=0)])
    t = np.arange(2 * window - 1, n)
    diff = (total[t + 1] - 2.0 * total[t + 1 - window] + total[t + 1 - 2 * window]) / window
    out[t] = np.einsum("ij,jk,ik->i", diff, precision, diff)
    return out


def split(rows: Array, precision: Array, window: int) -> int:
    """The most likely start of a change that is under way at the last of ``rows``: of the
    rows that have ``window`` rows before them, the one where the rows from it to the end
    differ most from the ``window`` rows before it (difference of means squared under
    ``precision``, weighted by n_after * n_before / (n_after + n_before), the two-sample
    statistic of a mean shift). Callers pass the last ``3 * window`` rows (``SPAN``)."""
    n = rows.shape[0]
    starts = np.arange(window, n)
    if starts.size == 0:
        return int(n - 1)
    total = np.vstack([np.zeros((1, rows.shape[1])), np.cumsum(rows, axis=0)])
    after = n - starts
    diff = (total[n] - total[starts]) / after[:, np.newaxis] - (total[starts] - total[starts - window]) / window
    weight = after * window / (after + window)
    return int(starts[np.argmax(weight * np.einsum("ij,jk,ik->i", diff, precision, diff))])


@dataclass(slots=True)
class ChangeState:
    """Carried between batches: the last ``3w - 1`` standardised rows, D at the last one,
    and the rows since the last change was reported."""

    recent: Array
    prev: float = float("nan")
    since: int = 1 << 30  # rows since the last change was reported, at the end of the last batch

    def to_dict(self) -> dict[str, Any]:
        return {"recent": self.recent.tolist(), "prev": None if np.isnan(self.prev) else self.prev,
                "since": self.since}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any], tags: int) -> ChangeState:
        recent = np.array(data.get("recent", []), dtype=np.float64).reshape(-1, tags)
        prev = data.get("prev")
        return cls(recent, float("nan") if prev is None else float(prev), int(data.get("since", 1 << 30)))


@dataclass(frozen=True, slots=True)
class Changes:
    """One batch's changes: the row where each was found, and the row it is estimated to
    have begun at (negative: before this batch)."""

    found: list[int]
    started: list[int]


def find(rows: Array, precision: Array, window: int, line: float, state: ChangeState) -> Changes:
    """Changes in ``rows`` (standardised, unsmoothed, no NaN), continuing ``state``."""
    carried = state.recent.shape[0]
    every = np.vstack([state.recent, rows]) if carried else rows
    d = statistic(every, precision, window)[carried:]
    if d.size == 0:
        return Changes([], [])
    prev = np.concatenate(([state.prev], d[:-1]))
    peaks = np.flatnonzero((prev > line) & (d < prev))  # the row after a peak above the line
    reported: list[int] = []
    last = -state.since  # row of the last report, in this batch's numbering
    for peak in peaks.tolist():
        if peak - last >= window:
            reported.append(peak)
            last = peak
    state.since = d.size - last
    state.prev = float(d[-1])
    state.recent = every[-(SPAN * window - 1) :].copy()
    started = []
    for r in reported:  # the likeliest split of the rows up to the report, in this batch's numbering
        upto = carried + r + 1
        first = max(0, upto - SPAN * window)
        started.append(split(every[first:upto], precision, window) + first - carried)
    return Changes(reported, started)
