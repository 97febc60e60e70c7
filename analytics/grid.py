"""From irregular telemetry samples to the regular grid the detector scores.

Edge agents publish on change (deadband) plus a heartbeat, so a tag's samples are
irregular. The value of a tag at grid time ``g`` is its last sample at or before ``g``,
if that sample is at most ``stale_s`` old; otherwise the tag is missing (NaN) there and
the detector holds its average for it.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["MIN_SAMPLES", "grid_times", "model_tags", "modelable", "out_of_mode", "resample"]

Array = npt.NDArray[np.float64]
Series = tuple[Array, Array]


def grid_times(after: float, until: float, step_s: float) -> Array:
    """Multiples of ``step_s`` (epoch-aligned) in (after, until]."""
    first = math.floor(after / step_s) + 1
    last = math.floor(until / step_s)
    return np.arange(first, last + 1, dtype=np.float64) * step_s


def resample(series: Mapping[int, Series], tag_ids: Sequence[int], grid: Array, stale_s: float) -> Array:
    """grid rows x tags: last value at or before each grid time, NaN when none or stale."""
    out = np.full((grid.size, len(tag_ids)), np.nan)
    for j, tag_id in enumerate(tag_ids):
        if tag_id not in series:
            continue
        times, values = series[tag_id]
        at = np.searchsorted(times, grid, side="right") - 1
        ok = at >= 0
        fresh = np.zeros(grid.size, dtype=bool)
        fresh[ok] = grid[ok] - times[at[ok]] <= stale_s
        out[fresh, j] = values[at[fresh]]
    return out


MIN_SAMPLES = 10  # fewer samples in a healthy window than this: too quiet a tag to model


def modelable(values: Array) -> bool:
    """Whether a tag's healthy samples suit the detector: enough of them, a level that moves
    both ways (not a running total, which OEE treats as a rate), and more than two distinct
    values (not an on/off or state signal, which is an operating mode, not a measurement)."""
    v = values[~np.isnan(values)]
    if v.size < MIN_SAMPLES or np.unique(v).size <= 2:
        return False
    steps = np.diff(v)
    return not (bool(np.all(steps >= 0)) or bool(np.all(steps <= 0)))


def model_tags(names: Mapping[int, str], kinds: Mapping[int, str], exclude: Sequence[str]) -> list[int]:
    """Tags the detector may use: numeric, and not matching an ``exclude`` pattern."""
    return [
        tag_id
        for tag_id, name in names.items()
        if kinds.get(tag_id, "number") not in ("bool", "string") and not any(fnmatch.fnmatch(name, p) for p in exclude)
    ]


def out_of_mode(mode: Array, running: Sequence[float]) -> npt.NDArray[np.bool_]:
    """Grid rows where the asset's mode tag says it is stopped or faulted (NaN: unknown, kept).

    The detector learns one operating mode; a planned stop is not an anomaly of it, so those
    rows are neither learned from nor scored (the averages hold across them)."""
    return ~np.isnan(mode) & ~np.isin(mode, np.asarray(running, dtype=np.float64))
